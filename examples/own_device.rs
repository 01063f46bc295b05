//! An application that already has a wgpu device (for rendering, say) trains a LoRA adapter
//! on that same device, then keeps using the device for its own work.
//!
//!     cargo run --release --example own_device
//!
//! The model is a small ViT with random weights and the task is synthetic (is the left or
//! the right half of the image brighter?), so the example needs no files; with a real model
//! use `Vit::load` and `Dataset::load` instead.

#![expect(clippy::print_stdout, reason = "an example shows its progress and results")]

use std::path::Path;

use anyhow::Context;
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::data::Dataset;
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::{Vit, VitWeights};
use peft_wgpu::train::{self, BatchOrder, TrainOptions};
use peft_wgpu::{Gpu, OptimizerKind};

/// The application's own device: opened with the features and limits peft-wgpu needs on top
/// of whatever the application asks for itself.
fn open_device() -> anyhow::Result<(wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .context("no GPU adapter (on headless Linux: apt-get install mesa-vulkan-drivers)")?;
    let limits = Gpu::required_limits(&adapter.limits()).map_err(|(limit, needed, available)| {
        anyhow::anyhow!("{}: {limit} is {available}, peft-wgpu needs {needed}", adapter.get_info().name)
    })?;
    let features = Gpu::required_features() | (adapter.features() & Gpu::optional_features());
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("my app"),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))?;
    Ok((device, queue))
}

/// `n` 8×8 single-channel images, label 1 when the right half is brighter than the left.
fn synthetic(n: usize, seed: u64) -> anyhow::Result<Dataset> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let (mut pixels, mut labels) = (Vec::with_capacity(n * 64), Vec::with_capacity(n));
    for _ in 0..n {
        let right_brighter = uniform() < 0.5;
        for _row in 0..8 {
            for col in 0..8 {
                let bright = (col >= 4) == right_brighter;
                pixels.push(uniform() + if bright { 0.5 } else { -0.5 });
            }
        }
        labels.push(u32::from(right_brighter));
    }
    Ok(Dataset::from_parts(Path::new("synthetic"), [n, 1, 8, 8], pixels, labels)?)
}

fn main() -> anyhow::Result<()> {
    let (device, queue) = open_device()?;
    // peft-wgpu takes handles to the application's device; both keep working on it.
    let gpu = Gpu::from_device(device.clone(), queue.clone())?;
    println!("training on {} ({:?})", gpu.adapter_info().name, gpu.adapter_info().backend);

    let vit = Vit::from_weights(&gpu, &VitWeights::random(&peft_wgpu::demo::model::architecture(), 7)?)?;
    let config_text = br#"{
        "peft_type": "LORA", "r": 4, "lora_alpha": 8,
        "target_modules": ["query", "value"], "modules_to_save": ["classifier"], "num_labels": 2
    }"#;
    let config_path = Path::new("inline adapter_config.json");
    let config = AdapterConfig::from_json(&JsonFile::parse(config_path, config_text)?)?;
    let adapter = Adapter::new(&gpu, config, config_path, &vit, 0)?;
    println!("{}", adapter.trainable_summary());

    let (train_set, held_out) = (synthetic(512, 1)?, synthetic(256, 2)?);
    let before = train::evaluate(&gpu, &vit, Some(&adapter), &held_out, 64)?;
    let options = TrainOptions {
        steps: 150,
        batch_size: 32,
        lr: 3e-3,
        optimizer: OptimizerKind::adamw(),
        order: BatchOrder::Shuffled { seed: 0 },
        seed: 0,
        micro_batch: None,
    };
    train::train(&gpu, &vit, &adapter, &train_set, &options, &mut |s| {
        if s.step % 25 == 0 || s.step + 1 == s.steps {
            println!("step {:>3}/{}: loss {:.4}", s.step + 1, s.steps, s.loss);
        }
    })?;
    let after = train::evaluate(&gpu, &vit, Some(&adapter), &held_out, 64)?;
    println!("held-out accuracy: {:.1}% before, {:.1}% after", 100.0 * before.accuracy, 100.0 * after.accuracy);

    // The application's own work continues on the same device and queue.
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("my app's buffer"),
        size: 1024,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, &[0u8; 1024]);
    queue.submit([]);
    device.poll(wgpu::PollType::wait_indefinitely())?;
    println!("the application's device is still in use: wrote {} bytes", buffer.size());
    Ok(())
}
