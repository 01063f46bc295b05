//! erf, exact GELU (plain and with a bias) and scaled softmax against their f64 twins,
//! PyTorch and their identities.

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::{activation, loss, softmax};
use peft_wgpu::reference::{activation as ref_act, loss as ref_loss, softmax as ref_softmax, sum as ref_sum};
use peft_wgpu::{Gpu, Tape, Tensor};

const DIMS: &[usize] = &[1, 2, 3, 7, 64, 255, 256, 257, 768, 3072];
const ROWS: &[usize] = &[1, 2, 7, 197];

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, v, shape).unwrap()
}

/// Elementwise `|got − want| ≤ rel(x)·|want| + abs`; returns the largest `|got − want|/|want|`.
fn assert_rel_each(what: &str, x: &[f32], got: &[f32], want: &[f64], rel: impl Fn(f64) -> f64, abs: f64) -> f64 {
    let mut worst: f64 = 0.0;
    for (i, ((&xi, &g), &w)) in x.iter().zip(got).zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let allowed = rel(xi as f64) * w.abs() + abs;
        assert!(
            err <= allowed,
            "{what}: x = {xi:e} (index {i}): got {g:e}, expected {w:e} (|diff| {err:.2e} > {allowed:.2e})"
        );
        if w != 0.0 && err > abs {
            worst = worst.max(err / w.abs());
        }
    }
    worst
}

/// Arguments for erf: a dense grid over [−10, 10], both signs of tiny values, the piece
/// boundaries and their f32 neighbours.
fn erf_arguments() -> Vec<f32> {
    let mut x: Vec<f32> = (0..=200_000).map(|i| -10.0 + 1e-4 * i as f32).collect();
    for e in -37..=1 {
        for m in [1.0f32, 2.5, 7.0] {
            let v = m * 10f32.powi(e);
            x.extend([v, -v]);
        }
    }
    for b in [0.0f32, 1.0, 2.5, 4.0] {
        x.extend([b, -b, b.next_up(), b.next_down(), -b.next_up(), -b.next_down()]);
    }
    x
}

/// erf on the GPU is within about one f32 ulp of the f64 twin everywhere.
#[test]
fn erf_matches_reference() {
    let gpu = gpu();
    let x = erf_arguments();
    let got = gpu.read(&activation::erf(&gpu, &upload(&gpu, &x, &[x.len()])).unwrap()).unwrap();
    let want: Vec<f64> = x.iter().map(|&v| ref_act::erf(v as f64)).collect();
    // Below 1e-37 the device may flush subnormal inputs or results to zero.
    let worst = assert_rel_each("erf", &x, &got, &want, |_| 1.5e-7, 1e-37);
    eprintln!("erf: worst relative error {worst:.3e} over {} arguments", x.len());
    assert_eq!(got[x.iter().position(|&v| v == 0.0).unwrap()], 0.0, "erf(0)");
}

/// The twin's erf against Python's `math.erf` (stored in the fixture), and the GPU too.
#[test]
fn erf_matches_python() {
    let gpu = gpu();
    let f = fixture("nn_torch.safetensors");
    let (x, want) = (f.f32("erf_x"), f.f64("erf_y"));
    let twin: Vec<f64> = x.iter().map(|&v| ref_act::erf(v as f64)).collect();
    for (i, (t, w)) in twin.iter().zip(&want).enumerate() {
        assert!((t - w).abs() <= 1e-14 * w.abs(), "twin erf({}) = {t:e}, math.erf = {w:e}", x[i]);
    }
    let got = gpu.read(&activation::erf(&gpu, &upload(&gpu, &x, &[x.len()])).unwrap()).unwrap();
    assert_rel_each("erf vs math.erf", &x, &got, &want, |_| 1.5e-7, 1e-37);
}

#[test]
fn gelu_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    for &n in &[1, 2, 7, 255, 256, 257, 70_001] {
        let x = rng.normal_vec(n, 0.0, 3.0);
        let dy = rng.normal_vec(n, 0.0, 1.0);
        let (xt, dyt) = (upload(&gpu, &x, &[n]), upload(&gpu, &dy, &[n]));
        let y = gpu.read(&activation::gelu(&gpu, &xt).unwrap()).unwrap();
        assert_close(&format!("gelu n={n}"), &y, &ref_act::gelu(&f64s(&x)), 2e-7, 0.0);
        let dx = gpu.read(&activation::gelu_backward(&gpu, &xt, &dyt).unwrap()).unwrap();
        // Φ(x) + x·φ(x) cancels near its zero (x ≈ −0.75): the error scales with Φ·|∂y| ≤ |∂y|.
        let dy_max = dy.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
        let want = ref_act::gelu_backward(&f64s(&x), &f64s(&dy));
        assert_close(&format!("gelu' n={n}"), &dx, &want, 4e-7, 2e-7 * dy_max);
    }
}

/// GELU keeps its relative accuracy in the negative tail (where ½x(1 + erf(x/√2)) would
/// cancel), to a few ulp: the kernel's e^(−x²/2) neither rounds x² first nor trusts the
/// device's exp (taking it from a rounded x/√2 gave 1.35e-5 at x = −12).
#[test]
fn gelu_is_relatively_accurate_in_the_tail() {
    let gpu = gpu();
    let x: Vec<f32> = (0..=2400).map(|i| -12.0 + 0.01 * i as f32).collect();
    let got = gpu.read(&activation::gelu(&gpu, &upload(&gpu, &x, &[x.len()])).unwrap()).unwrap();
    let want = ref_act::gelu(&f64s(&x));
    let worst = assert_rel_each("gelu tail", &x, &got, &want, |_| 1e-6, 1e-37);
    eprintln!("gelu on [-12, 12]: worst relative error {worst:.3e}");
}

#[test]
fn gelu_matches_torch() {
    let gpu = gpu();
    let f = fixture("nn_torch.safetensors");
    let (x, w) = (f.f32("gelu_x"), f.f32("gelu_w"));
    let (xt, wt) = (upload(&gpu, &x, &[x.len()]), upload(&gpu, &w, &[w.len()]));
    let mut tape = Tape::new(&gpu);
    let xv = tape.param(&xt);
    let y = activation::gelu_var(&mut tape, &xv).unwrap();
    assert_close("gelu torch", &gpu.read(y.value()).unwrap(), &f.f64("gelu_y"), 2e-7, 0.0);
    let dx = activation::gelu_backward(&gpu, &xt, &wt).unwrap();
    assert_close("gelu' torch", &gpu.read(&dx).unwrap(), &f.f64("gelu_dx"), 4e-7, 0.0);
}

/// The twins' backward rules against central differences of ⟨f(x), w⟩.
#[test]
fn twin_backwards_match_finite_differences() {
    let mut rng = Rng::new(32);
    let fd = |f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], w: &[f64]| -> Vec<f64> {
        let dot = |v: &[f64]| f(v).iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        (0..x.len())
            .map(|i| {
                let (mut p, mut m) = (x.to_vec(), x.to_vec());
                p[i] += 1e-6;
                m[i] -= 1e-6;
                (dot(&p) - dot(&m)) / 2e-6
            })
            .collect()
    };
    let close = |what: &str, got: &[f64], want: &[f64]| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-7 * (1.0 + w.abs()), "{what}[{i}]: analytic {g}, numeric {w}");
        }
    };
    let (rows, d) = (3, 7);
    let x = f64s(&rng.normal_vec(rows * d, 0.0, 3.0));
    let b = f64s(&rng.normal_vec(d, 0.0, 1.0));
    let w = f64s(&rng.normal_vec(rows * d, 0.0, 1.0));
    close("gelu'", &ref_act::gelu_backward(&x, &w), &fd(&|v| ref_act::gelu(v), &x, &w));
    let dz = ref_act::bias_gelu_backward(&x, &b, &w);
    close("bias_gelu ∂x", &dz, &fd(&|v| ref_act::bias_gelu(v, &b), &x, &w));
    close("bias_gelu ∂b", &ref_sum::sum_rows(&dz, d), &fd(&|v| ref_act::bias_gelu(&x, v), &b, &w));
    for alpha in [1.0, 0.125, -2.0] {
        let y = ref_softmax::softmax(&x, d, alpha);
        let want = fd(&|v| ref_softmax::softmax(v, d, alpha), &x, &w);
        close(&format!("softmax' alpha={alpha}"), &ref_softmax::softmax_backward(&y, &w, d, alpha), &want);
    }
}

/// bias_gelu forward and both gradients (through the tape, under a cross-entropy head).
#[test]
fn bias_gelu_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(33);
    for &(rows, d) in &[(1, 1), (2, 3), (7, 257), (197, 10)] {
        let x = rng.normal_vec(rows * d, 0.0, 2.0);
        let b = rng.normal_vec(d, 0.0, 1.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(d) as u32).collect();
        let mut tape = Tape::new(&gpu);
        let (xv, bv) = (tape.param(&upload(&gpu, &x, &[rows, d])), tape.param(&upload(&gpu, &b, &[d])));
        let y = activation::bias_gelu_var(&mut tape, &xv, &bv).unwrap();
        let l = loss::cross_entropy_var(&mut tape, &y, &Tensor::from_u32(&gpu, &labels, &[rows]).unwrap()).unwrap();
        let y_got = gpu.read(y.value()).unwrap();
        let grads = tape.backward(&l).unwrap();
        let (x64, b64) = (f64s(&x), f64s(&b));
        let what = format!("rows={rows} d={d}");
        let y_want = ref_act::bias_gelu(&x64, &b64);
        assert_close(&format!("bias_gelu {what}"), &y_got, &y_want, 2e-7, 0.0);
        let dz = ref_act::bias_gelu_backward(&x64, &b64, &ref_loss::cross_entropy_backward(&y_want, &labels, d, 1.0));
        assert_close(&format!("∂x {what}"), &gpu.read(grads.get(&xv).unwrap()).unwrap(), &dz, 1e-5, 1e-8);
        let db = ref_sum::sum_rows(&dz, d);
        assert_close(&format!("∂b {what}"), &gpu.read(grads.get(&bv).unwrap()).unwrap(), &db, 1e-5, 1e-8);
    }
}

fn check_softmax(gpu: &Gpu, rng: &mut Rng, rows: usize, d: usize, alpha: f32) {
    let what = format!("rows={rows} d={d} alpha={alpha}");
    let x = rng.normal_vec(rows * d, 0.0, 4.0);
    let dy = rng.normal_vec(rows * d, 0.0, 1.0);
    let xt = upload(gpu, &x, &[rows, d]);
    let y = softmax::softmax(gpu, &xt, alpha).unwrap();
    let dx = softmax::softmax_backward(gpu, &y, &upload(gpu, &dy, &[rows, d]), alpha).unwrap();
    let y_want = ref_softmax::softmax(&f64s(&x), d, alpha as f64);
    let y_got = gpu.read(&y).unwrap();
    // Each probability is good to a few ulps of itself (exp, one division), the sum to √d.
    assert_rel_each(
        &format!("softmax {what}"),
        &x,
        &y_got,
        &y_want,
        |_| 1e-6 * (1.0 + alpha.abs() as f64 * 4.0),
        1e-30,
    );
    for (r, row) in y_got.chunks(d).enumerate() {
        let s: f64 = row.iter().map(|&v| v as f64).sum();
        assert!((s - 1.0).abs() <= tol(2.0, d), "softmax {what}: row {r} sums to {s}");
    }
    // α·y·(∂y − Σ ∂y·y) cancels inside the bracket: the error scales with the terms.
    let dy64 = f64s(&dy);
    let dx_want = ref_softmax::softmax_backward(&y_want, &dy64, d, alpha as f64);
    let terms = y_want.chunks(d).zip(dy64.chunks(d)).fold(0.0f64, |m, (yr, gr)| {
        let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        yr.iter().zip(gr).fold(m, |m, (a, b)| m.max(a * (b.abs() + dot.abs())))
    });
    let abs = tol(8.0, d) * alpha.abs() as f64 * terms;
    assert_close(&format!("softmax' {what}"), &gpu.read(&dx).unwrap(), &dx_want, tol(8.0, d), abs);
}

#[test]
fn softmax_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(34);
    for &rows in ROWS {
        for &d in DIMS {
            if rows * d <= 200_000 {
                check_softmax(&gpu, &mut rng, rows, d, if d % 2 == 0 { 0.125 } else { 1.0 });
            }
        }
    }
    check_softmax(&gpu, &mut rng, 2, 4096, 1.0);
    check_softmax(&gpu, &mut rng, 3, 197, -0.5);
}

#[test]
fn softmax_matches_torch() {
    let gpu = gpu();
    let f = fixture("nn_torch.safetensors");
    for tag in ["attn", "plain"] {
        let key = |k: &str| format!("softmax_{tag}_{k}");
        let shape = f.shape(&key("x"));
        let alpha = f.f32(&key("alpha"))[0];
        let x = upload(&gpu, &f.f32(&key("x")), &shape);
        let mut tape = Tape::new(&gpu);
        let xv = tape.param(&x);
        let y = softmax::softmax_var(&mut tape, &xv, alpha).unwrap();
        assert_close(&key("y"), &gpu.read(y.value()).unwrap(), &f.f64(&key("y")), 1e-6, 0.0);
        let dx = softmax::softmax_backward(&gpu, y.value(), &upload(&gpu, &f.f32(&key("w")), &shape), alpha).unwrap();
        assert_close(&key("dx"), &gpu.read(&dx).unwrap(), &f.f64(&key("dx")), 1e-6, 0.0);
    }
}

/// Huge inputs neither overflow nor lose the row maximum.
#[test]
fn softmax_is_stable_for_large_inputs() {
    let gpu = gpu();
    let x = [1e30f32, 1e30, -1e30, 3e38, 3e38, 1.0];
    let y = gpu.read(&softmax::softmax(&gpu, &upload(&gpu, &x, &[2, 3]), 1.0).unwrap()).unwrap();
    assert_eq!(y, vec![0.5, 0.5, 0.0, 0.5, 0.5, 0.0]);
}

#[test]
fn activation_ops_reject_bad_shapes() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let b = Tensor::zeros(&gpu, &[3]).unwrap();
    assert!(activation::bias_gelu(&gpu, &x, &b).is_err());
    assert!(activation::gelu_backward(&gpu, &x, &b).is_err());
    assert!(softmax::softmax_backward(&gpu, &x, &b, 1.0).is_err());
    assert!(softmax::softmax(&gpu, &x, f32::INFINITY).is_err());
}

/// More rows than one grid dimension holds: the row kernels fold the grid into two.
#[test]
fn softmax_folds_long_grids() {
    let gpu = gpu();
    let rows = gpu.limits().max_compute_workgroups_per_dimension as usize + 3;
    let x: Vec<f32> = (0..rows * 2).map(|i| (i % 5) as f32).collect();
    let y = gpu.read(&softmax::softmax(&gpu, &upload(&gpu, &x, &[rows, 2]), 1.0).unwrap()).unwrap();
    let want = ref_softmax::softmax(&f64s(&x), 2, 1.0);
    assert_close("softmax folded grid", &y, &want, 1e-6, 0.0);
}
