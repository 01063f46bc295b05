//! Patchify and the ViT patch embedding: against the twins, a direct convolution, the
//! adjoint identity, and PyTorch (`scripts/fixtures_conv.py`).

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::patch::{patch_embed, patchify, unpatchify};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::shape as reference;
use peft_wgpu::{Tape, Tensor};

/// `[B, C, H, W]` and `[ph, pw]` patch: divisible, not divisible (dropped pixels), one patch,
/// patch 1, a ViT-like 32×32 grid of 4×4 patches, and oblong patches both ways.
const CASES: [([usize; 4], [usize; 2]); 7] = [
    ([2, 3, 8, 12], [4, 4]),
    ([1, 2, 9, 11], [4, 4]),
    ([3, 1, 5, 5], [5, 5]),
    ([2, 4, 3, 2], [1, 1]),
    ([1, 3, 32, 32], [4, 4]),
    ([2, 2, 6, 12], [2, 4]),
    ([1, 3, 10, 7], [5, 2]),
];

#[test]
fn patchify_matches_reference_and_unpatchify_is_its_adjoint() {
    let gpu = gpu();
    let mut rng = Rng::new(61);
    for (shape, p) in CASES {
        let img = rng.normal_vec(shape.iter().product(), 0.0, 1.0);
        let t = Tensor::from_slice(&gpu, &img, &shape).unwrap();
        let rows = patchify(&gpu, &t, p).unwrap();
        let (gh, gw) = (shape[2] / p[0], shape[3] / p[1]);
        assert_eq!(rows.shape(), &[shape[0], gh * gw, shape[1] * p[0] * p[1]]);
        let got = gpu.read(&rows).unwrap();
        let want = reference::patchify(&f64s(&img), &shape, p);
        assert!(got.iter().zip(&want).all(|(&g, &w)| g as f64 == w), "patchify {shape:?} p={p:?}");
        // ⟨patchify(x), y⟩ = ⟨x, unpatchify(y)⟩, and unpatchify matches its twin.
        let y = rng.normal_vec(rows.len(), 0.0, 1.0);
        let back = unpatchify(&gpu, &Tensor::from_slice(&gpu, &y, rows.shape()).unwrap(), &shape, p).unwrap();
        let back = gpu.read(&back).unwrap();
        assert_close(&format!("unpatchify {shape:?}"), &back, &reference::unpatchify(&f64s(&y), &shape, p), 0.0, 1e-30);
        let left: f64 = got.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
        let right: f64 = img.iter().zip(&back).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((left - right).abs() <= 1e-9 * left.abs().max(1.0), "adjoint {shape:?}: {left} vs {right}");
    }
    let t = Tensor::zeros(&gpu, &[1, 1, 3, 3]).unwrap();
    assert!(patchify(&gpu, &t, [4, 4]).is_err(), "patch larger than the image");
    assert!(patchify(&gpu, &t, [1, 4]).is_err(), "patch wider than the image");
    assert!(patchify(&gpu, &Tensor::zeros(&gpu, &[3, 3]).unwrap(), [1, 1]).is_err(), "not [B, C, H, W]");
}

#[test]
fn patch_embed_matches_a_direct_convolution() {
    let gpu = gpu();
    let mut rng = Rng::new(62);
    for (shape, p) in CASES {
        let d = 7;
        let img = rng.normal_vec(shape.iter().product(), 0.0, 1.0);
        let w = rng.normal_vec(d * shape[1] * p[0] * p[1], 0.0, 0.3);
        let b = rng.normal_vec(d, 0.0, 1.0);
        let mut tape = Tape::inference(&gpu);
        let vi = tape.constant(&Tensor::from_slice(&gpu, &img, &shape).unwrap());
        let vw = tape.constant(&Tensor::from_slice(&gpu, &w, &[d, shape[1], p[0], p[1]]).unwrap());
        let vb = tape.constant(&Tensor::from_slice(&gpu, &b, &[d]).unwrap());
        let tokens = patch_embed(&mut tape, &vi, &vw, Some(&vb)).unwrap();
        let (gh, gw) = (shape[2] / p[0], shape[3] / p[1]);
        assert_eq!(tokens.shape(), &[shape[0], gh * gw, d]);
        let want = reference::patch_conv(&f64s(&img), &shape, &f64s(&w), d, p, Some(&f64s(&b)));
        let k = shape[1] * p[0] * p[1];
        assert_close(
            &format!("patch_embed {shape:?} p={p:?}"),
            &gpu.read(tokens.value()).unwrap(),
            &want,
            tol(4.0, k),
            1e-6,
        );
    }
}

#[test]
fn patch_embed_matches_pytorch() {
    let gpu = gpu();
    let fx = fixture("patch_embed_torch.safetensors");
    let (shape, w_shape) = (fx.shape("images"), fx.shape("weight"));
    let mut tape = Tape::new(&gpu);
    let vi = tape.param(&Tensor::from_slice(&gpu, &fx.f32("images"), &shape).unwrap());
    let vw = tape.param(&Tensor::from_slice(&gpu, &fx.f32("weight"), &w_shape).unwrap());
    let vb = tape.param(&Tensor::from_slice(&gpu, &fx.f32("bias"), &fx.shape("bias")).unwrap());
    let tokens = patch_embed(&mut tape, &vi, &vw, Some(&vb)).unwrap();
    assert_eq!(tokens.shape(), fx.shape("tokens").as_slice());
    let k = w_shape[1] * w_shape[2] * w_shape[3];
    assert_close("tokens", &gpu.read(tokens.value()).unwrap(), &fx.f64("tokens"), tol(4.0, k), 1e-6);
    let vg = tape.constant(&Tensor::from_slice(&gpu, &fx.f32("grad_out"), tokens.shape()).unwrap());
    let weighted = mul_var(&mut tape, &tokens, &vg).unwrap();
    let loss = sum_var(&mut tape, &weighted).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let rows = tokens.shape()[0] * tokens.shape()[1];
    let read = |v| gpu.read(grads.get(v).expect("a gradient")).unwrap();
    assert_close("∂weight", &read(&vw), &fx.f64("grad_weight"), tol(4.0, rows), 1e-6);
    assert_close("∂bias", &read(&vb), &fx.f64("grad_bias"), tol(4.0, rows), 1e-6);
    assert_close("∂images", &read(&vi), &fx.f64("grad_images"), tol(4.0, w_shape[0]), 1e-6);
    assert_eq!(grads.get(&vw).unwrap().shape(), w_shape.as_slice());
}
