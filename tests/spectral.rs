//! The MoPPA spectral filter: fused and unfused kernels against the f64 twin and PyTorch, the
//! backward by the adjoint identity and by finite differences on the twin, and the prior
//! parameters' gradients through the filter. Tolerances are relative to the largest
//! |expected value| (`common::assert_close`); the filter must agree to 1e-5 of it.

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu};
use peft_wgpu::ops::dct::GridPlan;
use peft_wgpu::ops::priors;
use peft_wgpu::ops::spectral::{self, FilterPath};
use peft_wgpu::reference::{priors as ref_priors, spectral as reference};
use peft_wgpu::{Gpu, Tape, Tensor};

const REL: f64 = 1e-5;

/// The bound for a result that sums `terms` f32 products: `tol(8, terms)`, never looser than
/// [`REL`] (the runtime issue's 1e-5), so small grids are held to what f32 gives them.
fn rel(terms: usize) -> f64 {
    REL.min(common::tol(8.0, terms))
}
/// Grids `(gh, gw, channels)`: 2×31 has the longest fused side, 24×24 is fused forward only,
/// 64×64 (unfused only) has few channels, as lavapipe is slow.
const GRIDS: &[(usize, usize, usize)] =
    &[(1, 1, 3), (4, 4, 5), (7, 9, 3), (13, 13, 20), (14, 14, 19), (2, 31, 9), (20, 18, 6), (24, 24, 3), (64, 64, 2)];
const CASES: &[(usize, usize)] = &[(1, 0), (3, 1), (2, 2)];

fn upload(gpu: &Gpu, x: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, x, shape).unwrap()
}

/// The paths to test for the forward and the backward kernels: fused where it takes the grid,
/// and unfused.
fn paths(gpu: &Gpu, gh: usize, gw: usize, ch: usize) -> [Vec<FilterPath>; 2] {
    let tiles = spectral::fused_tiles(gpu, gh, gw, ch);
    [tiles.forward, tiles.backward].map(|t| {
        let mut p = vec![FilterPath::Unfused];
        p.extend(t.map(|_| FilterPath::Fused));
        p
    })
}

#[test]
fn fused_path_is_picked_when_the_grid_fits() {
    let gpu = gpu();
    let tiles = |forward, backward| spectral::FusedTiles { forward, backward };
    assert_eq!(spectral::fused_tiles(&gpu, 14, 14, 768), tiles(Some(16), Some(8)));
    assert_eq!(spectral::fused_tiles(&gpu, 14, 14, 5), tiles(Some(8), Some(8)));
    assert_eq!(spectral::fused_tiles(&gpu, 14, 14, 3), tiles(Some(4), Some(4)));
    assert_eq!(spectral::fused_tiles(&gpu, 1, 1, 768), tiles(Some(256), Some(128)));
    assert_eq!(spectral::fused_tiles(&gpu, 24, 24, 768), tiles(Some(4), None));
    assert_eq!(spectral::fused_tiles(&gpu, 33, 2, 4), tiles(None, None));
    assert_eq!(spectral::fused_tiles(&gpu, 64, 64, 2), tiles(None, None));
    let plan = GridPlan::new(&gpu, 64, 64).unwrap();
    let x = Tensor::zeros(&gpu, &[1, 4096, 2]).unwrap();
    let r = Tensor::zeros(&gpu, &[64, 64, 2]).unwrap();
    let e = spectral::moppa_filter_with(&gpu, &plan, &x, &r, FilterPath::Fused).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let bad_r = Tensor::zeros(&gpu, &[64, 64, 3]).unwrap();
    assert!(spectral::moppa_filter(&gpu, &plan, &x, &bad_r).is_err(), "r with other channels must be refused");
}

/// An empty batch gives an empty output and a zero ∂r, on both paths.
#[test]
fn empty_batch_gives_zero_dr() {
    let gpu = gpu();
    let plan = GridPlan::new(&gpu, 4, 4).unwrap();
    let x = Tensor::zeros(&gpu, &[0, 17, 8]).unwrap();
    let r = Tensor::full(&gpu, &[4, 4, 8], 1.0).unwrap();
    for path in [FilterPath::Fused, FilterPath::Unfused] {
        assert!(spectral::moppa_filter_with(&gpu, &plan, &x, &r, path).unwrap().is_empty());
        let (dx, dr) = spectral::moppa_filter_grads(&gpu, &plan, &x, Some(&r), &x, path).unwrap();
        assert!(dx.unwrap().is_empty());
        assert!(gpu.read(&dr).unwrap().iter().all(|&v| v == 0.0), "{path:?}");
    }
}

#[test]
fn filter_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for &(gh, gw, ch) in GRIDS {
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let r = rng.uniform_vec(gh * gw * ch, -0.5, 1.5);
        let tr = upload(&gpu, &r, &[gh, gw, ch]);
        for &(batch, prefix) in CASES {
            let dims = [batch, prefix + gh * gw, ch];
            let x = rng.normal_vec(dims.iter().product(), 0.0, 1.0);
            let dy = rng.normal_vec(x.len(), 0.0, 1.0);
            let (tx, tdy) = (upload(&gpu, &x, &dims), upload(&gpu, &dy, &dims));
            let want = reference::moppa_filter(&f64s(&x), dims, gh, gw, &f64s(&r));
            let (want_dx, want_dr) = reference::moppa_filter_grads(&f64s(&x), dims, gh, gw, &f64s(&r), &f64s(&dy));
            let [forward, backward] = paths(&gpu, gh, gw, ch);
            for path in forward {
                let what = format!("{path:?} {gh}x{gw} C={ch} batch {batch} prefix {prefix}");
                let y = spectral::moppa_filter_with(&gpu, &plan, &tx, &tr, path).unwrap();
                assert_close(&format!("y {what}"), &gpu.read(&y).unwrap(), &want, rel(gh * gw), 0.0);
            }
            for path in backward {
                let what = format!("{path:?} {gh}x{gw} C={ch} batch {batch} prefix {prefix}");
                let (dx, dr) = spectral::moppa_filter_grads(&gpu, &plan, &tx, Some(&tr), &tdy, path).unwrap();
                assert_close(&format!("∂x {what}"), &gpu.read(&dx.unwrap()).unwrap(), &want_dx, rel(gh * gw), 0.0);
                assert_close(&format!("∂r {what}"), &gpu.read(&dr).unwrap(), &want_dr, rel(gh * gw * batch), 0.0);
                let (none, dr) = spectral::moppa_filter_grads(&gpu, &plan, &tx, None, &tdy, path).unwrap();
                assert!(none.is_none());
                assert_close(&format!("∂r alone {what}"), &gpu.read(&dr).unwrap(), &want_dr, rel(gh * gw * batch), 0.0);
            }
        }
    }
}

/// Many channel tiles and batch chunks. `[5, 1 + 196, 70]` takes 5 forward tiles of 16 and 9
/// backward tiles of 8, the last ones partial (down to a partial quad). `[16, 1 + 16, 4096]`
/// on 4×4 makes 64 forward tiles and 128 backward tiles, so (for a few hundred workgroups)
/// each workgroup takes 2 (forward) and 4 (backward) batch elements in turn. `[190, 1 + 32,
/// 768]` on 1×32 would give each backward workgroup 64 images, whose loops pass lavapipe's
/// 65,535 iterations per invocation (the last images' ∂x and ∂r were dropped): chunks stay
/// shorter there.
#[test]
fn fused_and_unfused_agree_on_many_tiles() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    for (batch, gh, gw, ch) in [(5, 14, 14, 70), (16, 4, 4, 4096), (190, 1, 32, 768)] {
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let dims = [batch, 1 + gh * gw, ch];
        let x = upload(&gpu, &rng.normal_vec(dims.iter().product(), 0.0, 1.0), &dims);
        let dy = upload(&gpu, &rng.normal_vec(dims.iter().product(), 0.0, 1.0), &dims);
        let r = upload(&gpu, &rng.uniform_vec(gh * gw * ch, 0.0, 1.0), &[gh, gw, ch]);
        let run = |path| {
            let y = spectral::moppa_filter_with(&gpu, &plan, &x, &r, path).unwrap();
            let (dx, dr) = spectral::moppa_filter_grads(&gpu, &plan, &x, Some(&r), &dy, path).unwrap();
            let (_, dr_alone) = spectral::moppa_filter_grads(&gpu, &plan, &x, None, &dy, path).unwrap();
            [y, dx.unwrap(), dr, dr_alone].map(|t| gpu.read(&t).unwrap())
        };
        let (fused, unfused) = (run(FilterPath::Fused), run(FilterPath::Unfused));
        for (name, (a, b)) in ["y", "∂x", "∂r", "∂r alone"].iter().zip(fused.iter().zip(&unfused)) {
            assert_close(&format!("fused vs unfused {name} {dims:?}"), a, &f64s(b), REL, 0.0);
        }
    }
}

#[test]
fn filter_matches_torch() {
    let gpu = gpu();
    let f = fixture("priors_torch.safetensors");
    let plan = GridPlan::new(&gpu, 14, 14).unwrap();
    let x = upload(&gpu, &f.f32("filter_x"), &f.shape("filter_x"));
    let r = upload(&gpu, &f.f32("filter_r"), &f.shape("filter_r"));
    let w = upload(&gpu, &f.f32("filter_w"), &f.shape("filter_w"));
    for path in [FilterPath::Fused, FilterPath::Unfused] {
        let y = spectral::moppa_filter_with(&gpu, &plan, &x, &r, path).unwrap();
        assert_close(&format!("torch y {path:?}"), &gpu.read(&y).unwrap(), &f.f64("filter_y"), REL, 0.0);
        let (dx, dr) = spectral::moppa_filter_grads(&gpu, &plan, &x, Some(&r), &w, path).unwrap();
        let dx = gpu.read(&dx.unwrap()).unwrap();
        assert_close(&format!("torch ∂x {path:?}"), &dx, &f.f64("filter_grad_x"), REL, 0.0);
        assert_close(&format!("torch ∂r {path:?}"), &gpu.read(&dr).unwrap(), &f.f64("filter_grad_r"), REL, 0.0);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `⟨K x, y⟩ = ⟨x, K y⟩` (the backward of x is the filter itself) and, y being linear in r,
/// `⟨∂r, δr⟩ = ⟨∂y, filter(x, δr)⟩`.
#[test]
fn filter_backward_satisfies_the_adjoint_identities() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    for &(gh, gw, ch) in &[(4, 4, 5), (7, 9, 3), (14, 14, 12)] {
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let dims = [2, 1 + gh * gw, ch];
        let n: usize = dims.iter().product();
        let (x, y) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
        let (r, dr_dir) = (rng.uniform_vec(gh * gw * ch, 0.0, 1.0), rng.normal_vec(gh * gw * ch, 0.0, 1.0));
        let (tx, ty) = (upload(&gpu, &x, &dims), upload(&gpu, &y, &dims));
        let (tr, tdir) = (upload(&gpu, &r, &[gh, gw, ch]), upload(&gpu, &dr_dir, &[gh, gw, ch]));
        for path in paths(&gpu, gh, gw, ch)[1].clone() {
            let kx = gpu.read(&spectral::moppa_filter_with(&gpu, &plan, &tx, &tr, path).unwrap()).unwrap();
            let ky = gpu.read(&spectral::moppa_filter_with(&gpu, &plan, &ty, &tr, path).unwrap()).unwrap();
            let (lhs, rhs) = (dot(&kx, &y), dot(&x, &ky));
            let scale = dot(&x, &x).sqrt() * dot(&y, &y).sqrt();
            assert!((lhs - rhs).abs() <= REL * scale, "{path:?} {gh}x{gw}: ⟨Kx, y⟩ {lhs} vs ⟨x, Ky⟩ {rhs}");
            let (_, dr) = spectral::moppa_filter_grads(&gpu, &plan, &tx, None, &ty, path).unwrap();
            let lhs = dot(&gpu.read(&dr).unwrap(), &dr_dir);
            let k_dir = gpu.read(&spectral::moppa_filter_with(&gpu, &plan, &tx, &tdir, path).unwrap()).unwrap();
            // The prefix of k_dir is x, not a function of r: leave it out.
            let rhs = dot(&k_dir, &y) - (0..2).map(|b| dot(&x[b * n / 2..][..ch], &y[b * n / 2..][..ch])).sum::<f64>();
            let scale = scale * dot(&dr_dir, &dr_dir).sqrt();
            assert!((lhs - rhs).abs() <= REL * scale, "{path:?} {gh}x{gw}: ⟨∂r, δr⟩ {lhs} vs ⟨∂y, K(δr) x⟩ {rhs}");
        }
    }
}

/// Central differences of `⟨filter(x, r), w⟩` on the f64 twin against its gradients.
#[test]
fn reference_filter_grads_match_finite_differences() {
    let mut rng = Rng::new(24);
    let (gh, gw, ch) = (3, 4, 2);
    let dims = [2, 1 + gh * gw, ch];
    let n: usize = dims.iter().product();
    let x = f64s(&rng.normal_vec(n, 0.0, 1.0));
    let w = f64s(&rng.normal_vec(n, 0.0, 1.0));
    let r = f64s(&rng.uniform_vec(gh * gw * ch, 0.0, 1.0));
    let loss = |x: &[f64], r: &[f64]| -> f64 {
        reference::moppa_filter(x, dims, gh, gw, r).iter().zip(&w).map(|(a, b)| a * b).sum()
    };
    let (dx, dr) = reference::moppa_filter_grads(&x, dims, gh, gw, &r, &w);
    let h = 1e-6;
    for i in 0..n {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (loss(&up, &r) - loss(&down, &r)) / (2.0 * h);
        assert!((fd - dx[i]).abs() < 1e-7, "∂x[{i}]: finite difference {fd}, twin {}", dx[i]);
    }
    for i in 0..r.len() {
        let (mut up, mut down) = (r.clone(), r.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (loss(&x, &up) - loss(&x, &down)) / (2.0 * h);
        assert!((fd - dr[i]).abs() < 1e-7, "∂r[{i}]: finite difference {fd}, twin {}", dr[i]);
    }
}

/// A random prior with `K·T` products of both signs.
fn random_prior(rng: &mut Rng, gh: usize, gw: usize, heads: usize, d: usize) -> (ref_priors::Prior, Vec<Vec<f32>>) {
    let mut raw: Vec<Vec<f32>> = (0..3).map(|_| rng.normal_vec(gh * gw * heads, 0.8, 0.8)).collect();
    raw.extend((0..3).map(|_| rng.normal_vec(d, 0.3, 0.4)));
    raw.push(rng.normal_vec(3 * heads, 0.0, 1.0));
    raw.push(rng.uniform_vec(heads, 0.5, 3.0));
    let v = |i: usize| f64s(&raw[i]);
    let prior =
        ref_priors::Prior { gh, gw, heads, d, k: [v(0), v(1), v(2)], t: [v(3), v(4), v(5)], logits: v(6), tau: v(7) };
    (prior, raw)
}

fn prior_tensors(gpu: &Gpu, p: &ref_priors::Prior, raw: &[Vec<f32>]) -> Vec<Tensor> {
    let shapes = [vec![p.gh, p.gw, p.heads], vec![p.d], vec![3, p.heads], vec![p.heads]];
    raw.iter().enumerate().map(|(i, v)| upload(gpu, v, &shapes[[0, 0, 0, 1, 1, 1, 2, 3][i]])).collect()
}

/// Input `i` of a prior in the order K ×3, T ×3, logits, τ.
fn field(p: &mut ref_priors::Prior, i: usize) -> &mut Vec<f64> {
    match i {
        0..3 => &mut p.k[i],
        3..6 => &mut p.t[i - 3],
        6 => &mut p.logits,
        _ => &mut p.tau,
    }
}

/// `L(prior) = ⟨filter(x, response(prior)), w⟩`: the GPU gradients of every prior parameter
/// (filter backward to ∂r, then the response backward) against central differences of the
/// f64 twins.
#[test]
fn prior_grads_through_the_filter_match_finite_differences() {
    let gpu = gpu();
    let mut rng = Rng::new(25);
    let (gh, gw, heads, d) = (3, 4, 2, 2);
    let (prior, raw) = random_prior(&mut rng, gh, gw, heads, d);
    let dims = [2, 1 + gh * gw, heads * d];
    let n: usize = dims.iter().product();
    let (x, w) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
    let plan = GridPlan::new(&gpu, gh, gw).unwrap();
    let t = prior_tensors(&gpu, &prior, &raw);
    let (tx, tw) = (upload(&gpu, &x, &dims), upload(&gpu, &w, &dims));
    let (_, dr) = spectral::moppa_filter_grads(&gpu, &plan, &tx, None, &tw, FilterPath::Auto).unwrap();
    let g =
        priors::prior_response_grads(&gpu, [&t[0], &t[1], &t[2]], [&t[3], &t[4], &t[5]], &t[6], &t[7], &dr).unwrap();
    let got: Vec<Vec<f32>> =
        [&g.k[0], &g.k[1], &g.k[2], &g.t[0], &g.t[1], &g.t[2], &g.logits, &g.tau].map(|t| gpu.read(t).unwrap()).into();
    let (x64, w64) = (f64s(&x), f64s(&w));
    let loss = |p: &ref_priors::Prior| -> f64 {
        let y = reference::moppa_filter(&x64, dims, gh, gw, &ref_priors::prior_response(p));
        y.iter().zip(&w64).map(|(a, b)| a * b).sum()
    };
    let names = ["K_heat", "K_wave", "K_poisson", "T_heat", "T_wave", "T_poisson", "logits", "τ"];
    for (i, name) in names.iter().enumerate() {
        let len = got[i].len();
        let fd: Vec<f64> = (0..len)
            .map(|j| {
                let h = 1e-6;
                let (mut up, mut down) = (prior.clone(), prior.clone());
                field(&mut up, i)[j] += h;
                field(&mut down, i)[j] -= h;
                (loss(&up) - loss(&down)) / (2.0 * h)
            })
            .collect();
        assert_close(&format!("∂{name} through the filter"), &got[i], &fd, 1e-5, 1e-9);
    }
}

/// The tape ops chained, prior → response → filter, on a 1×1 grid with one channel so that
/// the output is the scalar loss: `y = x·r`, `∂x = r`, `∂r = x`, and the prior gradients are
/// those of the twin at `∂r = x`. Also the two one-sided cases of the filter's backward.
#[test]
fn tape_chains_priors_through_the_filter() {
    let gpu = gpu();
    let mut rng = Rng::new(26);
    let (prior, raw) = random_prior(&mut rng, 1, 1, 1, 1);
    let plan = GridPlan::new(&gpu, 1, 1).unwrap();
    let x = upload(&gpu, &[0.7], &[1, 1, 1]);
    let r_want = ref_priors::prior_response(&prior)[0];
    let want = ref_priors::prior_response_grads(&prior, &[0.7f32 as f64]);
    for (x_trains, prior_trains) in [(true, true), (false, true), (true, false)] {
        let mut tape = Tape::new(&gpu);
        let leaves: Vec<_> = prior_tensors(&gpu, &prior, &raw)
            .iter()
            .map(|t| if prior_trains { tape.param(t) } else { tape.constant(t) })
            .collect();
        let xv = if x_trains { tape.param(&x) } else { tape.constant(&x) };
        let l = &leaves;
        let r = priors::prior_response_var(&mut tape, [&l[0], &l[1], &l[2]], [&l[3], &l[4], &l[5]], &l[6], &l[7]);
        let y = spectral::moppa_filter_var(&mut tape, &plan, &xv, &r.unwrap()).unwrap();
        let grads = tape.backward(&y).unwrap();
        let what = format!("x trains {x_trains}, prior trains {prior_trains}");
        match grads.get(&xv) {
            Some(dx) => assert_close(&format!("∂x {what}"), &gpu.read(dx).unwrap(), &[r_want], 1e-6, 0.0),
            None => assert!(!x_trains, "{what}: no ∂x"),
        }
        let expect = [&want.k[0], &want.k[1], &want.k[2], &want.t[0], &want.t[1], &want.t[2], &want.logits, &want.tau];
        for (leaf, w) in leaves.iter().zip(expect) {
            match grads.get(leaf) {
                Some(g) => assert_close(&format!("prior grad {what}"), &gpu.read(g).unwrap(), w, 1e-5, 1e-7),
                None => assert!(!prior_trains, "{what}: a prior parameter got no gradient"),
            }
        }
    }
}
