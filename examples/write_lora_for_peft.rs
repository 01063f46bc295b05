//! Writes the LoRA adapters of `tests/fixtures/written_here/` (and our logits on fixed images)
//! that `scripts/check_peft_roundtrip.py` loads with PEFT:
//!
//!     cargo run --example write_lora_for_peft
//!     python scripts/check_peft_roundtrip.py
//!
//! `tests/peft_roundtrip.rs` fails when this code would write other bytes, so the recorded
//! PEFT check stays valid; rerun both steps then.

#[path = "../tests/support/adapters.rs"]
mod support;
#[path = "../tests/support/written_here.rs"]
mod written_here;

fn main() -> anyhow::Result<()> {
    let gpu = peft_wgpu::Gpu::new()?;
    let vit = support::tiny_vit(&gpu);
    let scratch = std::env::temp_dir().join(format!("peft-wgpu-written-here-{}", std::process::id()));
    let out = written_here::root();
    written_here::write_all(&gpu, &vit, &out, &scratch)?;
    std::fs::remove_dir_all(&scratch)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
