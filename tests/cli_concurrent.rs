//! Runs that use one folder at once (SPEC §11: never a mixed or lost adapter): a run
//! without `--force` that finishes while another saves into its `--out` is refused, not
//! saved over the other, and a reader that starts while a save is in progress waits for it
//! and reads the new adapter whole, and a run that finishes while a model is merged into its
//! `--out` saves nothing there. Saves are slowed with the test hook
//! `PEFT_WGPU_TEST_SLOW_WRITE_MS` (see `src/io/atomic/mod.rs`), which holds the folder's lock
//! for seconds.

mod cli_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cli_support::*;

const SLOW_WRITE_ENV: &str = "PEFT_WGPU_TEST_SLOW_WRITE_MS";

/// Starts `peft-wgpu args…` with its saves slowed by `slow_write_ms`.
fn start_slowed(args: &[&str], slow_write_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env(SLOW_WRITE_ENV, slow_write_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// Waits until `child` has begun writing `dir/adapter_model.safetensors` (its temporary is
/// there, so it holds the folder's lock).
fn wait_for_save(child: &mut Child, dir: &Path) {
    wait_for(child, Duration::from_secs(120), "the save to start", || {
        dir.is_dir() && !names_with(dir, ".adapter_model.safetensors.tmp-").is_empty()
    });
}

fn finishes(child: Child, what: &str) {
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_run_without_force_that_finishes_while_another_saves_there_is_refused() {
    let dir = scratch("concurrent-new-out");
    let data = good_data(&dir);
    let (model, config) = (fixture("vit_tiny"), fixture("adapters/flora/adapter_config.json"));
    let out = dir.join("new");
    let train = |seed: &'static str| {
        let args = ["train", "--model", s(&model), "--adapter-config", s(&config), "--data", s(&data)];
        [&args[..], &["--out", s(&out), "--steps", "1", "--batch-size", "2", "--seed", seed]].concat()
    };
    // The first run saves slowly; the second starts once that save has begun (no adapter in
    // --out yet) and reaches its own save while the first still writes.
    let mut first = start_slowed(&train("1"), 4_000);
    wait_for_save(&mut first, &out);
    let second = run(&train("2"));
    check_failure(&second, USAGE, &["--out", "received an adapter from another run", "nothing was saved"], false);
    finishes(first, "the first run");
    let saved = std::fs::read(out.join("adapter_config.json")).expect("the first run's adapter");
    assert!(!saved.is_empty());
    succeeds(&["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_reader_waits_for_a_save_in_progress_and_reads_the_new_adapter() {
    let dir = scratch("concurrent-reader");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let out = adapter_copy("lora_v4", &dir);
    let eval_into = |logits: &Path| {
        let args = ["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)];
        succeeds(&[&args[..], &["--logits-out", s(logits)]].concat());
        read_tensors(logits).into_iter().find(|t| t.0 == "logits").expect("logits").3
    };
    let old = eval_into(&dir.join("old.safetensors"));
    let train = ["train", "--model", s(&model), "--init", s(&out), "--data", s(&data), "--out", s(&out)];
    let mut writer = start_slowed(&[&train[..], &["--force", "--steps", "2", "--batch-size", "2"]].concat(), 3_000);
    wait_for_save(&mut writer, &out);
    // Started while the old adapter is still in place and the new one half written: it says
    // why it waits.
    let during_logits = dir.join("during.safetensors");
    let args = ["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data), "--logits-out"];
    let reading = run(&[&args[..], &[s(&during_logits)]].concat());
    assert!(reading.status.success(), "{}", String::from_utf8_lossy(&reading.stderr));
    let waited = String::from_utf8_lossy(&reading.stderr).into_owned();
    assert!(waited.contains("waiting for another peft-wgpu run saving into"), "{waited}");
    let during = read_tensors(&during_logits).into_iter().find(|t| t.0 == "logits").expect("logits").3;
    finishes(writer, "the save");
    let new = eval_into(&dir.join("new.safetensors"));
    assert_ne!(new, old, "training changed the adapter");
    assert_eq!(during, new, "the reader read the adapter the save in progress wrote");
    std::fs::remove_dir_all(&dir).ok();
}

/// A model merged into `--out` while a run trains is not joined by an adapter there, which
/// transformers would apply whenever it loads that folder: the run saves nothing.
#[test]
fn a_run_that_finishes_while_a_model_is_merged_into_its_out_saves_nothing() {
    let dir = scratch("concurrent-merge");
    let data = good_data(&dir);
    let (model, adapter) = (fixture("vit_tiny"), fixture("adapters/lora_v5"));
    let out = dir.join("new");
    let mut merge = start_slowed(&["merge", "--model", s(&model), "--adapter", s(&adapter), "--out", s(&out)], 4_000);
    wait_for(&mut merge, Duration::from_secs(120), "the merge's save to start", || {
        out.is_dir() && !names_with(&out, ".model.safetensors.tmp-").is_empty()
    });
    let train = run(&train_args(s(&model), s(&fixture("adapters/flora")), s(&data), s(&out), &[]));
    check_failure(&train, USAGE, &["--out", "received a model", "nothing was saved"], false);
    finishes(merge, "the merge");
    assert!(out.join("model.safetensors").is_file());
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(!out.join(name).exists(), "{name} saved beside the merged model");
    }
    std::fs::remove_dir_all(&dir).ok();
}
