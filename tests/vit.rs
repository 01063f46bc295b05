//! The ViT forward pass against transformers' own logits on a tiny random model, from the
//! single-file and the sharded folder.

mod common;

use std::path::Path;

use common::{assert_close, fixture, gpu};
use peft_wgpu::nn::{NoHooks, Vit};
use peft_wgpu::{Tape, Tensor};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn vit_matches_transformers() {
    let gpu = gpu();
    let f = fixture("vit_forward.safetensors");
    let want = f.f64("logits");
    for folder in ["vit_tiny", "vit_tiny_sharded"] {
        let vit = Vit::load(&gpu, &fixtures().join(folder)).expect("model loads");
        let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).expect("upload");
        let mut tape = Tape::inference(&gpu);
        let vars = vit.bind(&mut tape, false);
        let images = tape.constant(&pixels);
        let logits = vit.forward(&mut tape, &vars, &images, &NoHooks).expect("forward");
        assert_eq!(logits.shape(), [3, 5]);
        assert_close(folder, &gpu.read(logits.value()).expect("read"), &want, 1e-5, 1e-6);
    }
}

/// 9×14 images cut into 2×4 patches: a 4×3 grid, 13 tokens, and pixels past the last whole
/// patch dropped as transformers' strided conv drops them.
#[test]
fn an_oblong_vit_matches_transformers() {
    let gpu = gpu();
    let f = fixture("wide_expected.safetensors");
    let vit = Vit::load(&gpu, &fixtures().join("vit_wide")).expect("model loads");
    assert_eq!((vit.config().grid(), vit.config().tokens()), ((4, 3), 13));
    let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).expect("upload");
    let mut tape = Tape::inference(&gpu);
    let vars = vit.bind(&mut tape, false);
    let images = tape.constant(&pixels);
    let logits = vit.forward(&mut tape, &vars, &images, &NoHooks).expect("forward");
    assert_close("vit_wide", &gpu.read(logits.value()).expect("read"), &f.f64("vit.logits"), 1e-5, 1e-6);
    let mut tape = Tape::inference(&gpu);
    let vars = vit.bind(&mut tape, false);
    let square = tape.constant(&Tensor::zeros(&gpu, &[1, 3, 12, 8]).expect("zeros"));
    let e = vit.forward(&mut tape, &vars, &square, &NoHooks).expect_err("12×8 images on a 9×14 model");
    assert!(e.to_string().contains("3×9×14"), "{e}");
}
