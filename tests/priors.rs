//! Physical-prior responses, the router and the route entropy: against PyTorch autograd, against
//! the f64 twins on awkward grids, and the twins' gradients against finite differences.
//! Tolerances are relative to the largest |expected value| (`common::assert_close`).

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::priors;
use peft_wgpu::reference::priors::{self as reference, Prior};
use peft_wgpu::{Gpu, Tape, Tensor};

const NAMES: [&str; 3] = ["heat", "wave", "poisson"];

fn upload(gpu: &Gpu, x: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, x, shape).unwrap()
}

/// The eight inputs as f32 (K ×3, T ×3, logits, τ), a prior of `K·T` of both signs.
fn random_inputs(rng: &mut Rng, gh: usize, gw: usize, heads: usize, d: usize) -> Vec<Vec<f32>> {
    random_inputs_with(rng, [gh, gw, heads, d], 0.3, 0.5)
}

/// As [`random_inputs`] with `T ~ N(t_mean, t_std²)`.
fn random_inputs_with(rng: &mut Rng, [gh, gw, heads, d]: [usize; 4], t_mean: f64, t_std: f64) -> Vec<Vec<f32>> {
    let mut raw: Vec<Vec<f32>> = (0..3).map(|_| rng.normal_vec(gh * gw * heads, 0.8, 0.8)).collect();
    raw.extend((0..3).map(|_| rng.normal_vec(d, t_mean, t_std)));
    raw.push(rng.normal_vec(3 * heads, 0.0, 1.0));
    raw.push(rng.uniform_vec(heads, 0.5, 5.0));
    raw
}

fn as_prior(raw: &[Vec<f32>], gh: usize, gw: usize, heads: usize, d: usize) -> Prior {
    let v = |i: usize| f64s(&raw[i]);
    Prior { gh, gw, heads, d, k: [v(0), v(1), v(2)], t: [v(3), v(4), v(5)], logits: v(6), tau: v(7) }
}

fn as_tensors(gpu: &Gpu, raw: &[Vec<f32>], gh: usize, gw: usize, heads: usize, d: usize) -> Vec<Tensor> {
    let shapes = [vec![gh, gw, heads], vec![d], vec![3, heads], vec![heads]];
    raw.iter().enumerate().map(|(i, v)| upload(gpu, v, &shapes[[0, 0, 0, 1, 1, 1, 2, 3][i]])).collect()
}

fn grads_of(gpu: &Gpu, t: &[Tensor], dr: &Tensor) -> Vec<Vec<f32>> {
    let g = priors::prior_response_grads(gpu, [&t[0], &t[1], &t[2]], [&t[3], &t[4], &t[5]], &t[6], &t[7], dr).unwrap();
    [&g.k[0], &g.k[1], &g.k[2], &g.t[0], &g.t[1], &g.t[2], &g.logits, &g.tau]
        .iter()
        .map(|t| gpu.read(t).unwrap())
        .collect()
}

fn prior_fields(p: &Prior) -> [&Vec<f64>; 8] {
    [&p.k[0], &p.k[1], &p.k[2], &p.t[0], &p.t[1], &p.t[2], &p.logits, &p.tau]
}

#[test]
fn priors_match_torch() {
    let gpu = gpu();
    let f = fixture("priors_torch.safetensors");
    let keys: Vec<String> = NAMES
        .iter()
        .map(|n| format!("k_{n}"))
        .chain(NAMES.iter().map(|n| format!("t_{n}")))
        .chain(["logits".to_string(), "tau".to_string()])
        .collect();
    let t: Vec<Tensor> = keys.iter().map(|k| upload(&gpu, &f.f32(k), &f.shape(k))).collect();
    let probs = priors::router_probs(&gpu, &t[6], &t[7]).unwrap();
    assert_close("π vs torch", &gpu.read(&probs).unwrap(), &f.f64("probs"), 1e-6, 0.0);
    let r = priors::prior_response(&gpu, [&t[0], &t[1], &t[2]], [&t[3], &t[4], &t[5]], &t[6], &t[7]).unwrap();
    assert_close("r vs torch", &gpu.read(&r).unwrap(), &f.f64("r"), 1e-5, 0.0);
    let w = upload(&gpu, &f.f32("w"), &f.shape("w"));
    for (got, key) in grads_of(&gpu, &t, &w).iter().zip(&keys) {
        assert_close(&format!("∂{key} vs torch"), got, &f.f64(&format!("grad_{key}")), 1e-5, 0.0);
    }
    let h = priors::route_entropy(&gpu, &t[6], &t[7]).unwrap();
    assert_close("H vs torch", &gpu.read(&h).unwrap(), &f.f64("entropy"), 1e-6, 0.0);
    let one = upload(&gpu, &[1.0], &[1]);
    let (dl, dt) = priors::route_entropy_grads(&gpu, &t[6], &t[7], &one).unwrap();
    assert_close("∂H/∂logits vs torch", &gpu.read(&dl).unwrap(), &f.f64("entropy_grad_logits"), 1e-5, 0.0);
    assert_close("∂H/∂τ vs torch", &gpu.read(&dt).unwrap(), &f.f64("entropy_grad_tau"), 1e-5, 0.0);
}

/// Grids of the brief (64×64 with few heads), heads and d of 1 and awkward sizes. Small grids
/// take times that make `e·ω²` reach tens of radians; the large ones, whose gradients sum
/// thousands of such terms with cancellation, take times near SPEC's initialisation
/// (`N(0.05, ·)`, still with negative products), since there the f32 rounding of a large
/// argument, inherent to any f32 evaluation, would dominate the comparison.
#[test]
fn priors_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let cases = [(1, 1, 1, 1), (4, 4, 3, 5), (7, 9, 2, 3), (13, 13, 5, 7), (14, 14, 12, 16), (64, 64, 2, 2)];
    for (gh, gw, heads, d) in cases {
        let (t_mean, t_std) = if gh * gw > 100 { (0.05, 0.05) } else { (0.3, 0.5) };
        let raw = random_inputs_with(&mut rng, [gh, gw, heads, d], t_mean, t_std);
        let prior = as_prior(&raw, gh, gw, heads, d);
        let t = as_tensors(&gpu, &raw, gh, gw, heads, d);
        let what = format!("{gh}x{gw} heads {heads} d {d}");
        let r = priors::prior_response(&gpu, [&t[0], &t[1], &t[2]], [&t[3], &t[4], &t[5]], &t[6], &t[7]).unwrap();
        assert_close(&format!("r {what}"), &gpu.read(&r).unwrap(), &reference::prior_response(&prior), 1e-5, 0.0);
        let dr = rng.normal_vec(gh * gw * heads * d, 0.0, 1.0);
        let got = grads_of(&gpu, &t, &upload(&gpu, &dr, &[gh, gw, heads * d]));
        let want = reference::prior_response_grads(&prior, &f64s(&dr));
        let sums = [d, d, d, gh * gw * heads, gh * gw * heads, gh * gw * heads, gh * gw * d, gh * gw * d];
        let names = ["K_heat", "K_wave", "K_poisson", "T_heat", "T_wave", "T_poisson", "logits", "τ"];
        // exp(−e ω²) and cos(e ω²) of an f32 argument e·ω² are only as good as that argument:
        // the error grows with its size, on top of the error of the sums.
        let arg = max_argument(&prior);
        for (i, name) in names.iter().enumerate() {
            let rel = tol(8.0, sums[i]).max(1e-6) + 4.0 * common::EPS * arg;
            assert_close(&format!("∂{name} {what}"), &got[i], prior_fields(&want)[i], rel, 0.0);
        }
    }
}

/// The largest `ReLU(K·T)·ω²` of the heat and wave branches.
fn max_argument(p: &Prior) -> f64 {
    let mut arg = 0.0f64;
    for b in 0..2 {
        for pos in 0..p.gh * p.gw {
            for c in 0..p.heads * p.d {
                let e = (p.k[b][pos * p.heads + c / p.d] * p.t[b][c % p.d]).max(0.0);
                arg = arg.max(e * reference::omega2(pos, p.gh, p.gw));
            }
        }
    }
    arg
}

/// Heads beyond one workgroup exercise the strided loop of the one-workgroup entropy kernel.
#[test]
fn route_entropy_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    for heads in [1, 7, 300] {
        let logits = rng.normal_vec(3 * heads, 0.0, 2.0);
        let tau = rng.uniform_vec(heads, 0.3, 5.0);
        let (tl, tt) = (upload(&gpu, &logits, &[3, heads]), upload(&gpu, &tau, &[heads]));
        let (l64, t64) = (f64s(&logits), f64s(&tau));
        let probs = gpu.read(&priors::router_probs(&gpu, &tl, &tt).unwrap()).unwrap();
        assert_close(&format!("π heads {heads}"), &probs, &reference::router_probs(&l64, &t64), 1e-6, 0.0);
        let h = gpu.read(&priors::route_entropy(&gpu, &tl, &tt).unwrap()).unwrap();
        assert_close(&format!("H heads {heads}"), &h, &[reference::route_entropy(&l64, &t64)], 1e-6, 0.0);
        let mut tape = Tape::new(&gpu);
        let (lv, tv) = (tape.param(&tl), tape.param(&tt));
        let hv = priors::route_entropy_var(&mut tape, &lv, &tv).unwrap();
        let grads = tape.backward(&hv).unwrap();
        let (dl, dt) = reference::route_entropy_grad(&l64, &t64, 1.0);
        assert_close(&format!("∂logits heads {heads}"), &gpu.read(grads.get(&lv).unwrap()).unwrap(), &dl, 1e-5, 0.0);
        assert_close(&format!("∂τ heads {heads}"), &gpu.read(grads.get(&tv).unwrap()).unwrap(), &dt, 1e-5, 0.0);
    }
}

fn field(p: &mut Prior, i: usize) -> &mut Vec<f64> {
    match i {
        0..3 => &mut p.k[i],
        3..6 => &mut p.t[i - 3],
        6 => &mut p.logits,
        _ => &mut p.tau,
    }
}

/// Central differences of `⟨r, w⟩` and of `H` on the twins against their analytic gradients.
#[test]
fn reference_grads_match_finite_differences() {
    let mut rng = Rng::new(33);
    let (gh, gw, heads, d) = (3, 5, 2, 3);
    let mut raw = random_inputs(&mut rng, gh, gw, heads, d);
    // Larger times make e·ω² span several radians, so the wave branch turns over.
    raw[4].iter_mut().for_each(|v| *v *= 4.0);
    let prior = as_prior(&raw, gh, gw, heads, d);
    let w = f64s(&rng.normal_vec(gh * gw * heads * d, 0.0, 1.0));
    let loss = |p: &Prior| -> f64 { reference::prior_response(p).iter().zip(&w).map(|(a, b)| a * b).sum() };
    let want = reference::prior_response_grads(&prior, &w);
    let h = 1e-6;
    for i in 0..8 {
        for j in 0..prior_fields(&prior)[i].len() {
            let (mut up, mut down) = (prior.clone(), prior.clone());
            field(&mut up, i)[j] += h;
            field(&mut down, i)[j] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * h);
            let g = prior_fields(&want)[i][j];
            assert!((fd - g).abs() <= 1e-6 * (1.0 + g.abs()), "input {i}[{j}]: finite difference {fd}, twin {g}");
        }
    }
    let (dl, dt) = reference::route_entropy_grad(&prior.logits, &prior.tau, 1.0);
    for (i, want) in [(6, dl), (7, dt)] {
        for (j, g) in want.iter().enumerate() {
            let (mut up, mut down) = (prior.clone(), prior.clone());
            field(&mut up, i)[j] += h;
            field(&mut down, i)[j] -= h;
            let fd = (reference::route_entropy(&up.logits, &up.tau)
                - reference::route_entropy(&down.logits, &down.tau))
                / (2.0 * h);
            assert!((fd - g).abs() <= 1e-7 * (1.0 + g.abs()), "∂H input {i}[{j}]: finite difference {fd}, twin {g}");
        }
    }
}

/// ReLU's derivative at exactly 0 is 0: a zero K cell or a zero T entry gives no gradient
/// through that product, to K, T or through the slope.
#[test]
fn relu_at_zero_passes_no_gradient() {
    let gpu = gpu();
    let (gh, gw, heads, d) = (2, 2, 1, 2);
    let mut raw = random_inputs(&mut Rng::new(34), gh, gw, heads, d);
    for b in 0..3 {
        raw[b] = vec![1.0; 4];
        raw[3 + b] = vec![0.0, 0.0];
    }
    let t = as_tensors(&gpu, &raw, gh, gw, heads, d);
    let dr = upload(&gpu, &[1.0; 8], &[gh, gw, heads * d]);
    let g = grads_of(&gpu, &t, &dr);
    for (i, gi) in g.iter().take(6).enumerate() {
        assert!(gi.iter().all(|&v| v == 0.0), "input {i}: gradient {gi:?} through ReLU(0)");
    }
}

#[test]
fn mis_shaped_priors_are_errors() {
    let gpu = gpu();
    let raw = random_inputs(&mut Rng::new(35), 2, 3, 2, 4);
    let t = as_tensors(&gpu, &raw, 2, 3, 2, 4);
    let bad_k = Tensor::zeros(&gpu, &[2, 3, 3]).unwrap();
    let e = priors::prior_response(&gpu, [&t[0], &bad_k, &t[2]], [&t[3], &t[4], &t[5]], &t[6], &t[7]).unwrap_err();
    assert!(e.to_string().contains("prior_response"), "{e}");
    let bad_tau = Tensor::zeros(&gpu, &[3]).unwrap();
    assert!(priors::router_probs(&gpu, &t[6], &bad_tau).is_err());
    let bad_t = Tensor::zeros(&gpu, &[5]).unwrap();
    assert!(priors::prior_response(&gpu, [&t[0], &t[1], &t[2]], [&t[3], &bad_t, &t[5]], &t[6], &t[7]).is_err());
}
