//! Writes the demo's fine-tuning task as files for the command line: the digits 5–9
//! (labelled 0–4) as `train.safetensors` and `test.safetensors` in the data format of
//! `--data`, and the demo's adapter configs as `lora.json`, `flora.json`, `moppa.json` and
//! `rlp.json`. The base model is the committed `data/digits_vit/`.
//!
//!     cargo run --release --example export_digits -- digits-cli
//!
//! then, as the README's "First steps with the command line" shows:
//!
//!     target/release/peft-wgpu train --model data/digits_vit --adapter-config digits-cli/lora.json \
//!         --data digits-cli/train.safetensors --eval-data digits-cli/test.safetensors \
//!         --out my-lora --steps 600 --batch-size 16 --lr 3e-3

#![expect(clippy::print_stdout, reason = "an example says what it wrote and what to run next")]

use std::path::PathBuf;

use anyhow::Context;
use peft_wgpu::demo::Method;
use peft_wgpu::demo::digits::{Part, Task, split};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "digits-cli".into()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (part, name) in [(Part::Train, "train.safetensors"), (Part::HeldOut, "test.safetensors")] {
        let data = split(Task::FineTune, part)?;
        data.save(&out.join(name))?;
        println!("wrote {} ({} images of digits 5-9, labels 0-4)", out.join(name).display(), data.len());
    }
    for method in Method::ALL {
        let Some(config) = method.adapter_config() else { continue };
        let name = format!("{}.json", method.name().to_lowercase());
        std::fs::write(out.join(&name), config).with_context(|| format!("writing {name}"))?;
        println!(
            "wrote {} (the demo's {}; its learning rate: {})",
            out.join(&name).display(),
            method.name(),
            method.lr()
        );
    }
    Ok(())
}
