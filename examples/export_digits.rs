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

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "digits-cli".into()));
    for (path, what) in peft_wgpu::demo::write_task_files(&out)? {
        println!("wrote {} ({what})", path.display());
    }
    Ok(())
}
