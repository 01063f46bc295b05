//! Fused attention (`shaders/attention.wgsl`) against its f64 twin, forward and backward, on
//! odd token counts and head widths from 4 to 64; the twin's backward against finite
//! differences of its forward; and the fused path against the unfused tape ops.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::nn::attention::{AttentionPath, multi_head_attention_with};
use peft_wgpu::ops::attention::{attention, attention_backward};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::attention as twin;
use peft_wgpu::{Tape, Tensor};

/// (batch, tokens, width, heads): one token, two, a 4×4 grid + CLS, more tokens than a
/// workgroup's 32 (and 16) with head widths 12 and 64, ViT-B's shape with batch 1.
const SHAPES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 4, 1), (2, 2, 8, 2), (2, 17, 24, 3), (1, 33, 48, 4), (2, 45, 128, 2), (1, 197, 768, 12)];

fn random(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    rng.normal_vec(n, 0.0, std)
}

#[test]
fn attention_forward_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    for (b, t, d, h) in SHAPES {
        let n = b * t * d;
        let (q, k, v) = (random(&mut rng, n, 1.0), random(&mut rng, n, 1.0), random(&mut rng, n, 1.0));
        let up = |x: &[f32]| Tensor::from_slice(&gpu, x, &[b, t, d]).unwrap();
        let (o, lse) = attention(&gpu, &up(&q), &up(&k), &up(&v), h).unwrap();
        let (want_o, want_lse) = twin::attention_forward(&f64s(&q), &f64s(&k), &f64s(&v), [b, t, d], h);
        let what = format!("[{b}, {t}, {d}] with {h} heads");
        assert_close(&format!("o of {what}"), &gpu.read(&o).unwrap(), &want_o, tol(8.0, d / h * t), 1e-6);
        assert_close(&format!("lse of {what}"), &gpu.read(&lse).unwrap(), &want_lse, tol(8.0, d / h), 1e-6);
    }
}

#[test]
fn attention_backward_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(6);
    for (b, t, d, h) in SHAPES {
        let n = b * t * d;
        let (q, k, v, g) =
            (random(&mut rng, n, 1.0), random(&mut rng, n, 1.0), random(&mut rng, n, 1.0), random(&mut rng, n, 1.0));
        let up = |x: &[f32]| Tensor::from_slice(&gpu, x, &[b, t, d]).unwrap();
        let (tq, tk, tv) = (up(&q), up(&k), up(&v));
        let (o, lse) = attention(&gpu, &tq, &tk, &tv, h).unwrap();
        let (dq, dk, dv) = attention_backward(&gpu, &tq, &tk, &tv, &o, &lse, &up(&g), h).unwrap();
        let (wq, wk, wv) = twin::attention_backward(&f64s(&q), &f64s(&k), &f64s(&v), &f64s(&g), [b, t, d], h);
        let what = format!("[{b}, {t}, {d}] with {h} heads");
        let rel = tol(16.0, d / h * t);
        assert_close(&format!("∂q of {what}"), &gpu.read(&dq).unwrap(), &wq, rel, 1e-6);
        assert_close(&format!("∂k of {what}"), &gpu.read(&dk).unwrap(), &wk, rel, 1e-6);
        assert_close(&format!("∂v of {what}"), &gpu.read(&dv).unwrap(), &wv, rel, 1e-6);
    }
}

#[test]
fn twin_backward_matches_finite_differences_of_twin_forward() {
    let mut rng = Rng::new(7);
    let (b, t, d, h) = (2, 5, 8, 2);
    let n = b * t * d;
    let [q, k, v, g] = [0, 1, 2, 3].map(|_| f64s(&random(&mut rng, n, 1.0)));
    let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
        twin::attention_forward(q, k, v, [b, t, d], h).0.iter().zip(&g).map(|(o, g)| o * g).sum()
    };
    let (dq, dk, dv) = twin::attention_backward(&q, &k, &v, &g, [b, t, d], h);
    let eps = 1e-6;
    for e in [0, 7, n / 2, n - 1] {
        let bump = |x: &[f64], s: f64| -> Vec<f64> {
            let mut y = x.to_vec();
            y[e] += s * eps;
            y
        };
        let fd_q = (loss(&bump(&q, 1.0), &k, &v) - loss(&bump(&q, -1.0), &k, &v)) / (2.0 * eps);
        let fd_k = (loss(&q, &bump(&k, 1.0), &v) - loss(&q, &bump(&k, -1.0), &v)) / (2.0 * eps);
        let fd_v = (loss(&q, &k, &bump(&v, 1.0)) - loss(&q, &k, &bump(&v, -1.0))) / (2.0 * eps);
        for (name, fd, an) in [("q", fd_q, dq[e]), ("k", fd_k, dk[e]), ("v", fd_v, dv[e])] {
            assert!((fd - an).abs() < 1e-6 * (1.0 + an.abs()), "∂{name}[{e}]: analytic {an}, finite difference {fd}");
        }
    }
}

#[test]
fn fused_and_unfused_paths_agree_on_the_tape() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let (b, t, d, h) = (2, 19, 32, 4);
    let n = b * t * d;
    let inputs: Vec<Vec<f32>> = (0..4).map(|_| random(&mut rng, n, 1.0)).collect();
    let run = |path: AttentionPath| -> Vec<Vec<f32>> {
        let mut tape = Tape::new(&gpu);
        let vars: Vec<_> =
            inputs.iter().map(|x| tape.param(&Tensor::from_slice(&gpu, x, &[b, t, d]).unwrap())).collect();
        let o = multi_head_attention_with(&mut tape, &vars[0], &vars[1], &vars[2], h, path).unwrap();
        let og = mul_var(&mut tape, &o, &vars[3]).unwrap();
        let loss = sum_var(&mut tape, &og).unwrap();
        let o_value = o.value().clone();
        let grads = tape.backward(&loss).unwrap();
        let mut out = vec![gpu.read(&o_value).unwrap()];
        out.extend(vars[..3].iter().map(|v| gpu.read(grads.get(v).unwrap()).unwrap()));
        out
    };
    let fused = run(AttentionPath::Fused);
    let unfused = run(AttentionPath::Unfused);
    for (name, (f, u)) in ["o", "∂q", "∂k", "∂v"].iter().zip(fused.iter().zip(&unfused)) {
        assert_close(&format!("fused vs unfused {name}"), f, &f64s(u), tol(16.0, t * d / h), 1e-6);
    }
}

#[test]
fn fused_attention_refuses_heads_it_cannot_hold() {
    let gpu = gpu();
    for (d, h) in [(12, 2), (136, 2), (10, 1), (8, 3)] {
        let x = Tensor::zeros(&gpu, &[1, 3, d]).unwrap();
        let err = attention(&gpu, &x, &x, &x, h).unwrap_err();
        assert!(err.to_string().contains("heads"), "width {d}, {h} heads: {err}");
    }
}
