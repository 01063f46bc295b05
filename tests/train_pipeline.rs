//! The training loop reads each step's loss only after submitting the next step: every
//! step is still reported in order, and a step with a non-finite loss stops the run with
//! the adapter as it was before that step.

mod common;

use std::path::Path;

use common::{Rng, gpu};
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::Dataset;
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::Vit;
use peft_wgpu::train::{BatchOrder, StepReport, TrainOptions, train};
use peft_wgpu::{Error, Gpu, OptimizerKind};

fn model(gpu: &Gpu) -> Vit {
    Vit::load(gpu, &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit_tiny")).expect("tiny ViT")
}

fn lora(gpu: &Gpu, vit: &Vit) -> Adapter {
    lora_with(gpu, vit, r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}"#)
}

fn lora_with(gpu: &Gpu, vit: &Vit, json: &str) -> Adapter {
    let path = Path::new("adapter_config.json");
    let config = AdapterConfig::from_json(&JsonFile::parse(path, json.as_bytes()).unwrap()).unwrap();
    Adapter::new(gpu, config, path, vit, 3).unwrap()
}

/// Six random 8×8 images of three channels; image `nan_at` (if any) has a NaN pixel.
fn data(nan_at: Option<usize>) -> Dataset {
    let mut rng = Rng::new(9);
    let mut pixels = rng.normal_vec(6 * 192, 0.0, 1.0);
    if let Some(i) = nan_at {
        pixels[i * 192 + 10] = f32::NAN;
    }
    Dataset::from_parts(Path::new("data"), [6, 3, 8, 8], pixels, vec![0, 1, 2, 3, 4, 0]).unwrap()
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        steps,
        batch_size: 2,
        lr: 1e-2,
        optimizer: OptimizerKind::adamw(),
        order: BatchOrder::Sequential,
        seed: 0,
    }
}

fn values(gpu: &Gpu, adapter: &Adapter) -> Vec<Vec<f32>> {
    adapter.trainable().iter().map(|p| gpu.read(&p.tensor).unwrap()).collect()
}

#[test]
fn every_step_is_reported_in_order_with_a_finite_loss() {
    let gpu = gpu();
    let vit = model(&gpu);
    let adapter = lora(&gpu, &vit);
    let mut seen: Vec<StepReport> = Vec::new();
    train(&gpu, &vit, &adapter, &data(None), &options(5), &mut |r| seen.push(*r)).unwrap();
    assert_eq!(seen.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(seen.iter().all(|r| r.loss.is_finite() && r.steps == 5 && r.images == 2), "{seen:?}");
}

#[test]
fn a_non_finite_loss_stops_the_run_and_undoes_its_step() {
    let gpu = gpu();
    let vit = model(&gpu);
    // Step 2 takes images 4 and 5 (sequential order, batch 2); image 4 holds a NaN.
    let adapter = lora(&gpu, &vit);
    let mut seen = Vec::new();
    let err = train(&gpu, &vit, &adapter, &data(Some(4)), &options(4), &mut |r| seen.push(r.step)).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 2, .. }), "{err:?}");
    assert_eq!(seen, [0, 1], "steps before the bad one are reported, none after");
    // The adapter is where two clean steps leave it, although step 2 (and the update that
    // made it NaN) had been submitted before its loss was read.
    let clean = lora(&gpu, &vit);
    train(&gpu, &vit, &clean, &data(None), &options(2), &mut |_| {}).unwrap();
    let (got, want) = (values(&gpu, &adapter), values(&gpu, &clean));
    assert!(got.iter().flatten().all(|v| v.is_finite()), "the adapter holds non-finite values");
    assert_eq!(got, want, "the adapter differs from two clean steps");
}

#[test]
fn a_last_update_that_overflows_is_an_error_and_undone() {
    // Every loss is finite (the last one is computed before its update), but an SGD step with
    // a weight decay of 3e38 sends the parameters to infinity: the run must not end as if it
    // had succeeded.
    let gpu = gpu();
    let vit = model(&gpu);
    let adapter = lora(&gpu, &vit);
    let start = values(&gpu, &adapter);
    let opts =
        TrainOptions { steps: 1, lr: 100.0, optimizer: OptimizerKind::Sgd { weight_decay: Some(3e38) }, ..options(1) };
    let err = train(&gpu, &vit, &adapter, &data(None), &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::DivergedUpdate { step: 0, what } if what.contains("lora_")), "{err:?}");
    assert!(err.to_string().contains("step 1"), "{err}");
    assert_eq!(values(&gpu, &adapter), start, "the adapter is as before the update");
    // Huge but finite parameters: only the loss they give shows the divergence. (B starts
    // non-zero, so both factors move and their product overflows.)
    let opts = TrainOptions { steps: 1, lr: 3e38, optimizer: OptimizerKind::sgd(), ..options(1) };
    let json = r#"{"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"], "init_lora_weights": false}"#;
    let adapter = lora_with(&gpu, &vit, json);
    let start = values(&gpu, &adapter);
    let err = train(&gpu, &vit, &adapter, &data(None), &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::DivergedUpdate { step: 0, what } if what.contains("loss")), "{err:?}");
    assert_eq!(values(&gpu, &adapter), start, "the adapter is as before the update");
}
