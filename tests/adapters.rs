//! Every adapter's forward and the gradients of all its tensors against PyTorch fixtures
//! (`scripts/fixtures_adapters.py`): FLoRA, MoPPA and RLP from the torch reference, LoRA from
//! PEFT itself under both module namings.

mod common;

use std::path::Path;

use common::{assert_close, fixture, gpu};
use peft_wgpu::adapters::Adapter;
use peft_wgpu::nn::Vit;
use peft_wgpu::ops::elementwise::add_var;
use peft_wgpu::ops::loss::cross_entropy_var;
use peft_wgpu::{Tape, Tensor};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn check(name: &str, label_mod: Option<u32>) {
    let gpu = gpu();
    let f = fixture("adapters_expected.safetensors");
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let adapter = Adapter::load(&gpu, &fixtures().join("adapters").join(name), &vit).expect("adapter loads");
    let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).expect("pixels");
    let labels: Vec<u32> = f.ints("labels").iter().map(|&l| l as u32 % label_mod.unwrap_or(u32::MAX)).collect();
    let labels = Tensor::from_u32(&gpu, &labels, &[labels.len()]).expect("labels");
    let mut tape = Tape::new(&gpu);
    let base = vit.bind(&mut tape, false);
    let bound = adapter.bind(&mut tape);
    let images = tape.constant(&pixels);
    let logits = vit.forward(&mut tape, &base, &images, &bound).expect("forward");
    let mut loss = cross_entropy_var(&mut tape, &logits, &labels).expect("loss");
    // Step 0 of a run: MoPPA's route term at its full weight.
    if let Some(term) = bound.regularizer(&mut tape, 0, 100).expect("regularizer") {
        loss = add_var(&mut tape, &loss, &term).expect("add");
    }
    assert_close(
        &format!("{name} logits"),
        &gpu.read(logits.value()).unwrap(),
        &f.f64(&format!("{name}.logits")),
        1e-5,
        1e-6,
    );
    assert_close(
        &format!("{name} loss"),
        &gpu.read(loss.value()).unwrap(),
        &f.f64(&format!("{name}.loss")),
        1e-5,
        1e-6,
    );
    let vars = bound.vars().to_vec();
    drop(bound);
    let grads = tape.backward(&loss).expect("backward");
    let mut checked = 0;
    for (param, var) in adapter.trainable().iter().zip(&vars) {
        let key = format!("{name}.grad.{}", param.key);
        let want = f.f64(&key);
        let got = gpu.read(grads.get(var).unwrap_or_else(|| panic!("no gradient for {}", param.key))).unwrap();
        assert_close(&key, &got, &want, 1e-4, 1e-7);
        checked += 1;
    }
    let expected = f.keys().iter().filter(|k| k.starts_with(&format!("{name}.grad."))).count();
    assert_eq!(checked, expected, "{name}: the adapter has {checked} trainable tensors, the fixture {expected}");
}

#[test]
fn flora_matches_torch() {
    check("flora", None);
}

#[test]
fn moppa_matches_torch() {
    check("moppa", None);
}

#[test]
fn rlp_matches_torch() {
    check("rlp", Some(3));
}

#[test]
fn lora_written_by_peft_under_transformers_5_matches_peft() {
    check("lora_v5", None);
}

#[test]
fn lora_written_by_peft_under_transformers_4_matches_peft() {
    check("lora_v4", None);
}
