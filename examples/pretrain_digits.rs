//! Pretrains the demo's ViT on digits 0–4 with this crate's own engine and writes it to
//! `data/digits_vit/` (`config.json` + `model.safetensors`), which `peft-wgpu demo` embeds:
//!
//!     cargo run --release --example pretrain_digits [-- OUT_DIR]
//!
//! Every weight is trained (patch embedding, CLS token, position embeddings, LayerNorms, all
//! linears, the head) from transformers' initialisation with AdamW and a cosine learning-rate
//! decay, on the training digits 0–4 and their one-pixel shifts. Rebuild the crate
//! afterwards so the binary embeds the new weights.

use std::path::PathBuf;

use peft_wgpu::Gpu;
use peft_wgpu::demo::digits::{self, Part, Task};
use peft_wgpu::demo::methods::accuracy;
use peft_wgpu::demo::model::{FitOptions, architecture, init_weights, pretrain};

/// Seed of the initialisation and of the batch order.
const SEED: u64 = 0;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits_vit"), PathBuf::from);
    let options = FitOptions { steps: 3000, batch_size: 32, lr: 2e-3, seed: SEED, cosine: true };
    let gpu = Gpu::new()?;
    let fresh = init_weights(&architecture(), SEED)?;
    let started = std::time::Instant::now();
    let mut recent = Vec::new();
    let trained = pretrain(&gpu, &fresh, options, &mut |step, loss| {
        recent.push(loss);
        if (step + 1) % 100 == 0 {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            eprintln!(
                "step {:>5}/{}  mean loss {mean:.4}  ({:.0} s)",
                step + 1,
                options.steps,
                started.elapsed().as_secs_f64()
            );
            recent.clear();
        }
    })?;
    let train_acc = accuracy(&gpu, &trained, &digits::split(Task::Pretrain, Part::Train)?)?;
    let held_acc = accuracy(&gpu, &trained, &digits::split(Task::Pretrain, Part::HeldOut)?)?;
    eprintln!("accuracy on digits 0–4: training {:.2}%, held out {:.2}%", 100.0 * train_acc, 100.0 * held_acc);
    trained.save(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
