//! LayerNorm against its f64 twin, PyTorch and its own identities.

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::{loss, norm};
use peft_wgpu::reference::{loss as ref_loss, norm as reference, sum as ref_sum};
use peft_wgpu::{Gpu, Tape, Tensor};

const DIMS: &[usize] = &[1, 2, 3, 7, 64, 255, 256, 257, 768];
const ROWS: &[usize] = &[1, 2, 7, 197];

struct Case {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rng: &mut Rng, rows: usize, d: usize) -> Case {
    Case {
        x: rng.normal_vec(rows * d, 0.5, 2.0),
        gamma: rng.normal_vec(d, 1.0, 0.3),
        beta: rng.normal_vec(d, 0.0, 0.3),
        dy: rng.normal_vec(rows * d, 0.0, 1.0),
    }
}

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, v, shape).unwrap()
}

/// Forward and all three gradients (for ∂y = `c.dy`) on the GPU against the f64 twin.
fn check_against_twin(gpu: &Gpu, c: &Case, rows: usize, d: usize, eps: f32) {
    let what = format!("rows={rows} d={d} eps={eps:e}");
    let x = upload(gpu, &c.x, &[rows, d]);
    let (gamma, beta) = (upload(gpu, &c.gamma, &[d]), upload(gpu, &c.beta, &[d]));
    let dy = upload(gpu, &c.dy, &[rows, d]);
    let out = norm::layer_norm(gpu, &x, &gamma, &beta, eps).unwrap();
    let dx = norm::layer_norm_backward(gpu, &x, &gamma, &out.mean, &out.rstd, &dy).unwrap();
    let dgamma = norm::layer_norm_grad_gamma(gpu, &x, &out.mean, &out.rstd, &dy).unwrap();

    let (x64, g64, dy64) = (f64s(&c.x), f64s(&c.gamma), f64s(&c.dy));
    let (y, mean, rstd) = reference::layer_norm(&x64, &g64, &f64s(&c.beta), eps as f64);
    let r = tol(4.0, d);
    // x − μ carries the rounding of x, so x̂ is good to about ε·|x|·rstd: large for rows
    // whose spread is small against their values.
    let cond =
        x64.chunks(d).zip(&rstd).map(|(row, r)| r * row.iter().fold(0.0f64, |m, v| m.max(v.abs()))).fold(0.0, f64::max);
    let g_abs = g64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(&format!("y {what}"), &gpu.read(&out.y).unwrap(), &y, r, r * cond * g_abs + 1e-6);
    assert_close(&format!("mean {what}"), &gpu.read(&out.mean).unwrap(), &mean, r, 1e-7);
    let rstd_got = gpu.read(&out.rstd).unwrap();
    for (i, (&g, &w)) in rstd_got.iter().zip(&rstd).enumerate() {
        assert!(((g as f64) - w).abs() <= r * w, "rstd {what}: row {i}: got {g}, expected {w}");
    }
    // ∂x = rstd·(g − mean(g) − x̂·mean(g·x̂)) cancels (to 0 for d ≤ 2 when σ² ≫ eps), so its
    // error scales with the terms, rstd·|g|, not with the result.
    let dx_want = reference::layer_norm_backward(&x64, &g64, &dy64, eps as f64);
    let g_max = dy64.chunks(d).flat_map(|r| r.iter().zip(&g64).map(|(a, b)| (a * b).abs())).fold(0.0, f64::max);
    let terms = g_max * rstd.iter().fold(0.0f64, |m, &v| m.max(v));
    let dx_abs = tol(8.0, d) * terms * (1.0 + cond);
    assert_close(&format!("dx {what}"), &gpu.read(&dx).unwrap(), &dx_want, tol(8.0, d), dx_abs);
    let dg_want = reference::layer_norm_gamma_partials(&x64, &dy64, d, eps as f64);
    assert_close(&format!("dgamma {what}"), &gpu.read(&dgamma).unwrap(), &dg_want, tol(4.0, rows), 1e-6);
}

#[test]
fn layer_norm_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for &rows in ROWS {
        for &d in DIMS {
            check_against_twin(&gpu, &case(&mut rng, rows, d), rows, d, 1e-5);
        }
    }
    for &rows in &[1, 2, 7] {
        check_against_twin(&gpu, &case(&mut rng, rows, 3072), rows, 3072, 1e-12);
    }
}

#[test]
fn layer_norm_matches_torch() {
    let gpu = gpu();
    let f = fixture("nn_torch.safetensors");
    let shape = f.shape("ln_x");
    let d = *shape.last().unwrap();
    let x = Tensor::from_slice(&gpu, &f.f32("ln_x"), &shape).unwrap();
    let gamma = Tensor::from_slice(&gpu, &f.f32("ln_gamma"), &[d]).unwrap();
    let beta = Tensor::from_slice(&gpu, &f.f32("ln_beta"), &[d]).unwrap();
    let w = Tensor::from_slice(&gpu, &f.f32("ln_w"), &shape).unwrap();
    for (tag, eps) in [("1e-12", 1e-12f32), ("1e-6", 1e-6)] {
        let out = norm::layer_norm(&gpu, &x, &gamma, &beta, eps).unwrap();
        let dx = norm::layer_norm_backward(&gpu, &x, &gamma, &out.mean, &out.rstd, &w).unwrap();
        let dg = norm::layer_norm_grad_gamma(&gpu, &x, &out.mean, &out.rstd, &w).unwrap();
        let db = peft_wgpu::ops::sum::sum_rows(&gpu, &w, w.last_dim()).unwrap();
        let key = |k: &str| format!("ln_eps{tag}_{k}");
        // Row (1, 3) has a spread of 1e-3 around 0.01, which costs f32 a few digits.
        assert_close(&key("y"), &gpu.read(&out.y).unwrap(), &f.f64(&key("y")), 1e-5, 1e-5);
        assert_close(&key("dx"), &gpu.read(&dx).unwrap(), &f.f64(&key("dx")), 1e-5, 1e-5);
        assert_close(&key("dgamma"), &gpu.read(&dg).unwrap(), &f.f64(&key("dgamma")), 1e-5, 1e-6);
        assert_close(&key("dbeta"), &gpu.read(&db).unwrap(), &f.f64(&key("dbeta")), 1e-6, 1e-6);
    }
    // The tiny-spread row is where the two eps differ; both fixtures must not agree there.
    let (a, b) = (f.f64("ln_eps1e-12_y"), f.f64("ln_eps1e-6_y"));
    assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 0.1), "the fixture does not exercise eps");
}

/// Central differences of ⟨twin(x), w⟩ in every input against the twin's backward.
#[test]
fn layer_norm_twin_backward_matches_finite_differences() {
    let mut rng = Rng::new(12);
    let (rows, d, eps) = (3, 5, 1e-5);
    let c = case(&mut rng, rows, d);
    let (x, gamma, beta, w) = (f64s(&c.x), f64s(&c.gamma), f64s(&c.beta), f64s(&c.dy));
    let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
        reference::layer_norm(x, g, b, eps).0.iter().zip(&w).map(|(p, q)| p * q).sum()
    };
    let h = 1e-6;
    let diff = |v: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
        (0..v.len())
            .map(|i| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[i] += h;
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    };
    let close = |what: &str, got: &[f64], want: &[f64]| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-7 * (1.0 + w.abs()), "{what}[{i}]: analytic {g}, numeric {w}");
        }
    };
    close("dx", &reference::layer_norm_backward(&x, &gamma, &w, eps), &diff(&x, &|v| loss(v, &gamma, &beta)));
    close("dgamma", &reference::layer_norm_gamma_partials(&x, &w, d, eps), &diff(&gamma, &|v| loss(&x, v, &beta)));
    close("dbeta", &ref_sum::sum_rows(&w, d), &diff(&beta, &|v| loss(&x, &gamma, v)));
}

/// With γ = 1 and β = 0 every row comes out with mean 0 and variance 1 (when σ² ≫ eps).
#[test]
fn layer_norm_standardises_rows() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    for &(rows, d) in &[(7, 257), (2, 3072), (197, 3)] {
        let x: Vec<f32> = rng.normal_vec(rows * d, 3.0, 5.0);
        let xt = Tensor::from_slice(&gpu, &x, &[rows, d]).unwrap();
        let ones = Tensor::full(&gpu, &[d], 1.0).unwrap();
        let zeros = Tensor::zeros(&gpu, &[d]).unwrap();
        let y = gpu.read(&norm::layer_norm(&gpu, &xt, &ones, &zeros, 1e-12).unwrap().y).unwrap();
        for (r, row) in y.chunks(d).enumerate() {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            assert!(mean.abs() < 1e-5, "rows={rows} d={d}: row {r} has mean {mean}");
            assert!((var - 1.0).abs() < 1e-5, "rows={rows} d={d}: row {r} has variance {var}");
        }
    }
}

/// The tape op under a cross-entropy head, with every combination of trainable inputs:
/// gradients match the composed twins, and frozen inputs get none.
#[test]
fn layer_norm_var_gradients_flow_only_where_wanted() {
    let gpu = gpu();
    let mut rng = Rng::new(14);
    let (rows, d) = (7, 10);
    let c = case(&mut rng, rows, d);
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(d) as u32).collect();
    let labels_t = Tensor::from_u32(&gpu, &labels, &[rows]).unwrap();
    let (x64, g64) = (f64s(&c.x), f64s(&c.gamma));
    let (y, _, _) = reference::layer_norm(&x64, &g64, &f64s(&c.beta), 1e-5);
    let dy = ref_loss::cross_entropy_backward(&y, &labels, d, 1.0);
    let want = [
        reference::layer_norm_backward(&x64, &g64, &dy, 1e-5),
        reference::layer_norm_gamma_partials(&x64, &dy, d, 1e-5),
        ref_sum::sum_rows(&dy, d),
    ];
    for mask in 0..8u32 {
        let mut tape = Tape::new(&gpu);
        let tensors = [upload(&gpu, &c.x, &[rows, d]), upload(&gpu, &c.gamma, &[d]), upload(&gpu, &c.beta, &[d])];
        let vars: Vec<_> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| if mask & (1 << i) != 0 { tape.param(t) } else { tape.constant(t) })
            .collect();
        let y = norm::layer_norm_var(&mut tape, &vars[0], &vars[1], &vars[2], 1e-5).unwrap();
        let l = loss::cross_entropy_var(&mut tape, &y, &labels_t).unwrap();
        let grads = tape.backward(&l).unwrap();
        for (i, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
            match grads.get(&vars[i]) {
                Some(g) => {
                    assert!(mask & (1 << i) != 0, "mask {mask}: {name} of a frozen input");
                    assert_close(&format!("{name} mask {mask}"), &gpu.read(g).unwrap(), &want[i], 1e-5, 1e-7);
                }
                None => assert!(mask & (1 << i) == 0, "mask {mask}: {name} missing"),
            }
        }
    }
}

#[test]
fn layer_norm_rejects_bad_shapes() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let good = Tensor::zeros(&gpu, &[4]).unwrap();
    let bad = Tensor::zeros(&gpu, &[3]).unwrap();
    let e = norm::layer_norm(&gpu, &x, &bad, &good, 1e-5).unwrap_err();
    assert!(e.to_string().contains("layer_norm"), "{e}");
    assert!(norm::layer_norm(&gpu, &x, &good, &bad, 1e-5).is_err());
    assert!(norm::layer_norm(&gpu, &x, &good, &good, f32::NAN).is_err());
}
