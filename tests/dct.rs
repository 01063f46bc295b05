//! DCT-II / DCT-III kernels against their f64 twins and scipy, on awkward sizes, with the
//! identities `idct(dct(x)) = x` and `⟨dct x, y⟩ = ⟨x, dct3 y⟩`, and the tape ops' backward.
//! Tolerances are relative to the largest |expected value| (`common::assert_close`).

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::dct::{self, DctPlan, GridPlan};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::priors;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::{dct as reference, priors as ref_priors};
use peft_wgpu::{Gpu, Tape, Tensor};

/// Lengths: the brief's list plus the workgroup size ± 1.
const SIZES: &[usize] = &[1, 2, 7, 13, 14, 64, 100, 255, 256, 257, 1000, 4096];
/// Grids `(gh, gw, channels)`: 64×64 with few channels, as lavapipe is slow.
const GRIDS: &[(usize, usize, usize)] = &[(1, 1, 3), (4, 4, 5), (7, 9, 3), (13, 13, 4), (14, 14, 6), (64, 64, 2)];

fn upload(gpu: &Gpu, x: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, x, shape).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

#[test]
fn dct2_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for &n in SIZES {
        let plan = DctPlan::new(&gpu, n).unwrap();
        for rows in [1, 3] {
            let x = rng.normal_vec(rows * n, 0.0, 1.0);
            let t = upload(&gpu, &x, &[rows, n]);
            let got = gpu.read(&dct::dct2(&gpu, &plan, &t).unwrap()).unwrap();
            assert_close(
                &format!("dct2 n={n} rows={rows}"),
                &got,
                &reference::dct2_rows(&f64s(&x), n),
                tol(2.0, n),
                0.0,
            );
            let got = gpu.read(&dct::dct3(&gpu, &plan, &t).unwrap()).unwrap();
            assert_close(
                &format!("dct3 n={n} rows={rows}"),
                &got,
                &reference::dct3_rows(&f64s(&x), n),
                tol(2.0, n),
                0.0,
            );
        }
    }
}

#[test]
fn dct_matches_scipy() {
    let gpu = gpu();
    let f = fixture("dct_scipy.safetensors");
    for &n in &[1, 2, 7, 13, 14, 64, 100, 1000, 4096] {
        let x = f.f32(&format!("x_{n}"));
        let plan = DctPlan::new(&gpu, n).unwrap();
        let t = upload(&gpu, &x, &f.shape(&format!("x_{n}")));
        let got = gpu.read(&dct::dct2(&gpu, &plan, &t).unwrap()).unwrap();
        assert_close(&format!("dct2 vs scipy n={n}"), &got, &f.f64(&format!("dct2_{n}")), tol(2.0, n), 0.0);
        let got = gpu.read(&dct::dct3(&gpu, &plan, &t).unwrap()).unwrap();
        assert_close(&format!("dct3 vs scipy n={n}"), &got, &f.f64(&format!("dct3_{n}")), tol(2.0, n), 0.0);
    }
    let plan = GridPlan::new(&gpu, 7, 9).unwrap();
    let x = upload(&gpu, &f.f32("grid_x"), &f.shape("grid_x"));
    let got = gpu.read(&dct::dct2_grid(&gpu, &plan, &x).unwrap()).unwrap();
    assert_close("dct2_grid vs scipy dctn", &got, &f.f64("grid_dct2"), tol(2.0, 63), 0.0);
}

#[test]
fn dct_identities_hold() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &n in SIZES {
        let plan = DctPlan::new(&gpu, n).unwrap();
        let (x, y) = (rng.normal_vec(2 * n, 0.0, 1.0), rng.normal_vec(2 * n, 0.0, 1.0));
        let (tx, ty) = (upload(&gpu, &x, &[2, n]), upload(&gpu, &y, &[2, n]));
        let cx = dct::dct2(&gpu, &plan, &tx).unwrap();
        let back = gpu.read(&dct::dct3(&gpu, &plan, &cx).unwrap()).unwrap();
        assert_close(&format!("idct(dct(x)) n={n}"), &back, &f64s(&x), tol(4.0, n), 0.0);
        let (cx, cty) = (gpu.read(&cx).unwrap(), gpu.read(&dct::dct3(&gpu, &plan, &ty).unwrap()).unwrap());
        let (lhs, rhs) = (dot(&cx, &y), dot(&x, &cty));
        let allowed = tol(4.0, n) * norm(&x) * norm(&y);
        assert!((lhs - rhs).abs() <= allowed, "⟨dct x, y⟩ {lhs} vs ⟨x, dct3 y⟩ {rhs} for n={n}");
    }
}

#[test]
fn grid_dct_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    for &(gh, gw, ch) in GRIDS {
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        for (batch, prefix) in [(1, 0), (2, 1), (3, 2)] {
            let dims = [batch, prefix + gh * gw, ch];
            let x = rng.normal_vec(dims.iter().product(), 0.0, 1.0);
            let t = upload(&gpu, &x, &dims);
            let what = format!("{gh}x{gw} batch {batch} prefix {prefix}");
            let got = gpu.read(&dct::dct2_grid(&gpu, &plan, &t).unwrap()).unwrap();
            let want = reference::dct2_grid(&f64s(&x), dims, gh, gw);
            assert_close(&format!("dct2_grid {what}"), &got, &want, tol(2.0, gh * gw), 0.0);
            let got = gpu.read(&dct::dct3_grid(&gpu, &plan, &t).unwrap()).unwrap();
            let want = reference::dct3_grid(&f64s(&x), dims, gh, gw);
            assert_close(&format!("dct3_grid {what}"), &got, &want, tol(2.0, gh * gw), 0.0);
        }
    }
}

#[test]
fn grid_dct_accepts_the_grid_layout() {
    let gpu = gpu();
    let mut rng = Rng::new(14);
    let plan = GridPlan::new(&gpu, 5, 3).unwrap();
    let x = rng.normal_vec(2 * 15 * 4, 0.0, 1.0);
    let got = gpu.read(&dct::dct2_grid(&gpu, &plan, &upload(&gpu, &x, &[2, 5, 3, 4])).unwrap()).unwrap();
    let want = reference::dct2_grid(&f64s(&x), [2, 15, 4], 5, 3);
    assert_close("dct2_grid [B, gh, gw, C]", &got, &want, tol(2.0, 15), 0.0);
    let bad = upload(&gpu, &x, &[2, 3, 5, 4]);
    assert!(dct::dct2_grid(&gpu, &plan, &bad).is_err(), "a transposed grid must be refused");
    let short = upload(&gpu, &x[..2 * 14 * 4], &[2, 14, 4]);
    assert!(dct::dct2_grid(&gpu, &plan, &short).is_err(), "fewer tokens than the grid must be refused");
}

#[test]
fn grid_dct_identities_hold() {
    let gpu = gpu();
    let mut rng = Rng::new(15);
    for &(gh, gw, ch) in GRIDS {
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let dims = [2, 1 + gh * gw, ch];
        let n: usize = dims.iter().product();
        let (x, y) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
        let (tx, ty) = (upload(&gpu, &x, &dims), upload(&gpu, &y, &dims));
        let cx = dct::dct2_grid(&gpu, &plan, &tx).unwrap();
        let back = gpu.read(&dct::dct3_grid(&gpu, &plan, &cx).unwrap()).unwrap();
        assert_close(&format!("idct2(dct2(x)) {gh}x{gw}"), &back, &f64s(&x), tol(4.0, gh * gw), 0.0);
        let (cx, cty) = (gpu.read(&cx).unwrap(), gpu.read(&dct::dct3_grid(&gpu, &plan, &ty).unwrap()).unwrap());
        let (lhs, rhs) = (dot(&cx, &y), dot(&x, &cty));
        let allowed = tol(4.0, gh * gw) * norm(&x) * norm(&y);
        assert!((lhs - rhs).abs() <= allowed, "⟨dct2 x, y⟩ {lhs} vs ⟨x, dct3 y⟩ {rhs} on {gh}x{gw}");
    }
}

/// The tape ops, with the route entropy of `dct(x)` (as `[3, N]` router logits) as the scalar
/// loss: `∂x` must be the other transform of the entropy's gradient.
#[test]
fn dct_vars_backpropagate_the_other_transform() {
    let gpu = gpu();
    let mut rng = Rng::new(16);
    for n in [1, 7, 257] {
        let plan = DctPlan::new(&gpu, n).unwrap();
        let x = rng.normal_vec(3 * n, 0.0, 1.0);
        let tau = rng.uniform_vec(n, 0.5, 2.0);
        for forward in [true, false] {
            let mut tape = Tape::new(&gpu);
            let xv = tape.param(&upload(&gpu, &x, &[3, n]));
            let tv = tape.constant(&upload(&gpu, &tau, &[n]));
            let y = if forward { dct::dct2_var(&mut tape, &plan, &xv) } else { dct::dct3_var(&mut tape, &plan, &xv) };
            let y = y.unwrap();
            let yv = gpu.read(y.value()).unwrap();
            let h = priors::route_entropy_var(&mut tape, &y, &tv).unwrap();
            let grads = tape.backward(&h).unwrap();
            let got = gpu.read(grads.get(&xv).unwrap()).unwrap();
            let (dy, _) = ref_priors::route_entropy_grad(&f64s(&yv), &f64s(&tau), 1.0);
            let want = if forward { reference::dct3_rows(&dy, n) } else { reference::dct2_rows(&dy, n) };
            assert_close(&format!("∂x of dct{} n={n}", if forward { 2 } else { 3 }), &got, &want, 1e-5, 0.0);
        }
    }
}

/// The grid ops on the tape, on a 7×9 grid behind a prefix token: with `L = Σ y ⊙ w`, the
/// gradient of the DCT-II is the DCT-III of `w` and the other way round, and the prefix
/// tokens' gradient is `w` there.
#[test]
fn grid_dct_vars_backpropagate() {
    let gpu = gpu();
    let (gh, gw) = (7, 9);
    let dims = [2, 1 + gh * gw, 3];
    let plan = GridPlan::new(&gpu, gh, gw).unwrap();
    let mut rng = Rng::new(12);
    let n = dims.iter().product();
    let (x, w) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
    for forward in [true, false] {
        let mut tape = Tape::new(&gpu);
        let xv = tape.param(&upload(&gpu, &x, &dims));
        let wv = tape.constant(&upload(&gpu, &w, &dims));
        let y =
            if forward { dct::dct2_grid_var(&mut tape, &plan, &xv) } else { dct::dct3_grid_var(&mut tape, &plan, &xv) };
        let y = y.unwrap();
        let weighted = mul_var(&mut tape, &y, &wv).unwrap();
        let loss = sum_var(&mut tape, &weighted).unwrap();
        let grads = tape.backward(&loss).unwrap();
        let got = gpu.read(grads.get(&xv).unwrap()).unwrap();
        let want = if forward {
            reference::dct3_grid(&f64s(&w), dims, gh, gw)
        } else {
            reference::dct2_grid(&f64s(&w), dims, gh, gw)
        };
        assert_close(
            &format!("∂x of the grid dct{}", if forward { 2 } else { 3 }),
            &got,
            &want,
            tol(4.0, gh * gw),
            0.0,
        );
    }
}

#[test]
fn bad_lengths_are_errors() {
    let gpu = gpu();
    assert!(DctPlan::new(&gpu, 0).is_err());
    assert!(DctPlan::new(&gpu, dct::MAX_LEN + 1).is_err());
    assert!(GridPlan::new(&gpu, 0, 3).is_err());
    let plan = DctPlan::new(&gpu, 4).unwrap();
    let x = Tensor::zeros(&gpu, &[2, 5]).unwrap();
    let e = dct::dct2(&gpu, &plan, &x).unwrap_err();
    assert!(e.to_string().contains("dct2"), "{e}");
}
