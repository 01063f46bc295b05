//! Shared by the adapter file tests and `examples/write_lora_for_peft.rs` (included with
//! `#[path]`): configs from JSON, adapters with non-zero tensors made deterministically
//! through the public API, and logits on fixed inputs.
#![allow(dead_code, reason = "each includer uses a different subset")]

use std::path::{Path, PathBuf};

use peft_wgpu::adapters::{Adapter, AdapterConfig, WEIGHTS_FILE};
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::io::safetensors::{self as st, HostTensor, TensorFile};
use peft_wgpu::nn::{NoHooks, Vit};
use peft_wgpu::rng::Rng;
use peft_wgpu::{Gpu, Tape, Tensor};

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tiny ViT of `tests/fixtures/vit_tiny`.
pub fn tiny_vit(gpu: &Gpu) -> Vit {
    Vit::load(gpu, &fixtures().join("vit_tiny")).expect("the tiny ViT loads")
}

/// An adapter config from a JSON value (as if read from `adapter_config.json`).
pub fn config(value: &serde_json::Value) -> AdapterConfig {
    let text = value.to_string();
    AdapterConfig::from_json(&JsonFile::parse(Path::new("adapter_config.json"), text.as_bytes()).expect("JSON"))
        .expect("a valid config")
}

/// A fresh adapter of `cfg` with `seed`, saved to `dir`, every tensor of its file moved by
/// `N(0, std²)` noise (drawn from `seed` in key order), and loaded back: non-zero `B`, cores
/// and heads, made the same way on every machine.
pub fn perturbed(gpu: &Gpu, vit: &Vit, cfg: &serde_json::Value, seed: u64, std: f64, dir: &Path) -> Adapter {
    let _ = std::fs::remove_dir_all(dir);
    let fresh = Adapter::new(gpu, config(cfg), Path::new("adapter_config.json"), vit, seed).expect("a fresh adapter");
    fresh.save(gpu, dir).expect("saved");
    let path = dir.join(WEIGHTS_FILE);
    let file = TensorFile::open(&path).expect("the saved file");
    let mut rng = Rng::new(seed ^ 0x5EED);
    let moved: Vec<(String, HostTensor)> = file
        .keys()
        .map(|k| {
            let mut t = file.f32(k).expect("f32");
            t.data.iter_mut().for_each(|v| *v += (std * rng.normal()) as f32);
            (k.to_string(), t)
        })
        .collect();
    let list: Vec<(String, &HostTensor)> = moved.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&path, &list, None).expect("rewritten");
    Adapter::load(gpu, dir, vit).expect("the perturbed adapter loads")
}

/// `count` fixed images for the tiny ViT, `[count, 3, 8, 8]`.
pub fn pixels(count: usize) -> (Vec<f32>, Vec<usize>) {
    pixels_sized(count, [8, 8])
}

/// `count` fixed 3-channel images of `[h, w]` pixels, `[count, 3, h, w]`.
pub fn pixels_sized(count: usize, [h, w]: [usize; 2]) -> (Vec<f32>, Vec<usize>) {
    (Rng::new(2024).normal_vec(count * 3 * h * w, 0.0, 1.0), vec![count, 3, h, w])
}

/// Logits `[B, labels]` of `vit` (with `adapter`, if any) on `pixels`.
pub fn logits(gpu: &Gpu, vit: &Vit, adapter: Option<&Adapter>, pixels: &(Vec<f32>, Vec<usize>)) -> Vec<f32> {
    let images = Tensor::from_slice(gpu, &pixels.0, &pixels.1).expect("pixels");
    let mut tape = Tape::inference(gpu);
    let base = vit.bind(&mut tape, false);
    let images = tape.constant(&images);
    let y = match adapter {
        Some(a) => {
            let bound = a.bind(&mut tape);
            vit.forward(&mut tape, &base, &images, &bound)
        }
        None => vit.forward(&mut tape, &base, &images, &NoHooks),
    };
    gpu.read(y.expect("forward").value()).expect("read")
}
