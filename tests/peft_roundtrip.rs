//! "LoRA files written here load in PEFT": `scripts/check_peft_roundtrip.py` loaded the
//! folders of `tests/fixtures/written_here/` with PEFT and recorded the result in
//! `tests/fixtures/peft_roundtrip.json`. This test checks that record, and that this code
//! still writes those exact files (so the record still speaks for it) and PEFT's parameter
//! counts.

mod common;
#[path = "support/adapters.rs"]
mod support;
#[path = "support/written_here.rs"]
mod written_here;

use std::path::Path;

use common::{assert_close, f64s, fixture, gpu};
use peft_wgpu::adapters::{Adapter, CONFIG_FILE, WEIGHTS_FILE};
use peft_wgpu::io::TensorFile;
use serde_json::Value;

fn record() -> Value {
    let path = support::fixtures().join("peft_roundtrip.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn cases() -> Vec<Value> {
    record()["cases"].as_array().expect("a list of cases").clone()
}

#[test]
fn peft_loaded_every_case_and_matched_our_logits() {
    let cases = cases();
    for c in &cases {
        let name = c["adapter"].as_str().unwrap();
        let diff = c["max_abs_diff"].as_f64().unwrap();
        let largest = c["max_abs_logit"].as_f64().unwrap();
        let moved = c["max_abs_change_from_base"].as_f64().unwrap();
        let versions = format!("transformers {}, PEFT {}", c["transformers"], c["peft"]);
        assert!(diff <= 1e-5 * largest, "{name} under {versions}: |diff| {diff:e} of max |logit| {largest}");
        assert!(moved > 1e3 * diff, "{name}: the adapter moves the logits by only {moved}");
    }
    let under = |name: &str, major: &str| {
        cases.iter().any(|c| c["adapter"] == name && c["transformers"].as_str().unwrap().starts_with(major))
    };
    assert!(under("lora_transformers5", "5."), "the transformers-5-named adapter under transformers 5");
    assert!(under("lora_on_disk", "5."), "the adapter configured with on-disk names under transformers 5");
    assert!(under("lora_saved_containers", "5."), "the adapter saving whole containers under transformers 5");
    assert!(under("lora_bias_all", "5."), "the adapter training every bias under transformers 5");
    assert!(under("lora_bias_lora_only", "5."), "the adapter training its modules' biases under transformers 5");
    assert!(under("lora_new_head", "5."), "the adapter with a new head of another label count under transformers 5");
    assert!(under("lora_transformers4", "4."), "the adapter written in the on-disk naming under transformers 4");
    for (name, _) in written_here::cases() {
        assert!(cases.iter().any(|c| c["adapter"] == name), "{name} was checked");
    }
}

#[test]
fn this_code_still_writes_the_checked_files() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peft_roundtrip");
    let _ = std::fs::remove_dir_all(&scratch);
    let out = scratch.join("written");
    written_here::write_all(&gpu, &vit, &out, &scratch.join("work")).unwrap();
    for (name, _) in written_here::cases() {
        for file in [CONFIG_FILE, WEIGHTS_FILE] {
            let committed = written_here::root().join(name).join(file);
            let now = std::fs::read(out.join(name).join(file)).unwrap();
            assert!(
                std::fs::read(&committed).unwrap() == now,
                "{} differs from what this code writes now: run `cargo run --example write_lora_for_peft` \
                 and `scripts/check_peft_roundtrip.py`, and commit both",
                committed.display()
            );
        }
    }
    // Our logits on the recorded images still match the recorded ones (other GPUs round
    // differently, so within the tolerance of the check, not bit for bit).
    let recorded = fixture("written_here/logits.safetensors");
    let now = TensorFile::open(&out.join("logits.safetensors")).unwrap();
    assert_eq!(now.f32("pixel_values").unwrap().data, recorded.f32("pixel_values"));
    for (name, _) in written_here::cases() {
        assert_close(name, &now.f32(name).unwrap().data, &f64s(&recorded.f32(name)), 1e-5, 0.0);
    }
}

#[test]
fn trainable_summary_is_peft_print_trainable_parameters() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    for c in cases() {
        let name = c["adapter"].as_str().unwrap();
        let adapter = Adapter::load(&gpu, &written_here::root().join(name), &vit).unwrap();
        assert_eq!(adapter.trainable_summary(), c["print_trainable_parameters"].as_str().unwrap(), "{name}");
        assert_eq!(adapter.num_trainable() as u64, c["trainable_params"].as_u64().unwrap(), "{name}");
    }
    // And for the adapters PEFT wrote itself.
    let summaries = record()["fixture_summaries"].as_array().expect("fixture summaries").clone();
    assert_eq!(summaries.len(), 2);
    for c in summaries {
        let folder = c["folder"].as_str().unwrap();
        let adapter = Adapter::load(&gpu, &Path::new(env!("CARGO_MANIFEST_DIR")).join(folder), &vit).unwrap();
        assert_eq!(adapter.trainable_summary(), c["print_trainable_parameters"].as_str().unwrap(), "{folder}");
    }
}
