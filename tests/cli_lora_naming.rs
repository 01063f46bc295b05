//! The module naming `train` saves LoRA keys in, through the binary: that of the `--init`
//! file when it uses one (PEFT 0.17 under transformers 4 reads only the on-disk naming, PEFT
//! 0.18 and later under transformers 5 only theirs), transformers 5's for a new adapter, with
//! a note when the model's config comes from transformers 4, and `PEFT_WGPU_LORA_NAMING`
//! to choose; a saved adapter without a task names its model class for `AutoPeftModel`.
//! Also: probes that a killed run left in an output's folder are cleaned up by the next run.

mod cli_support;

use cli_support::*;
use std::path::Path;

/// The sorted tensor names of `dir/adapter_model.safetensors`.
fn keys(dir: &Path) -> Vec<String> {
    let mut k: Vec<String> = read_tensors(&dir.join("adapter_model.safetensors")).into_iter().map(|t| t.0).collect();
    k.sort();
    k
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).expect("config")).expect("json")
}

/// Whether every key of a LoRA layer module is in the naming whose layer paths start with
/// `prefix` (and at least one is).
fn layer_keys_in(dir: &Path, prefix: &str) -> bool {
    let layer: Vec<String> = keys(dir).into_iter().filter(|k| k.contains(".layer")).collect();
    !layer.is_empty() && layer.iter().all(|k| k.starts_with(&format!("base_model.model.{prefix}")))
}

const ON_DISK: &str = "vit.encoder.layer.";
const TRANSFORMERS5: &str = "vit.layers.";

#[test]
fn lora_keys_keep_the_init_files_naming_or_the_one_asked_for() {
    let dir = scratch("lora-naming");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let (m, d) = (s(&model), s(&data));
    let v4 = fixture("adapters/lora_v4");
    assert!(layer_keys_in(&v4, ON_DISK), "the fixture is in the on-disk naming");

    // From a file PEFT 0.17 wrote: saved in its naming, its config as it was.
    let kept = dir.join("kept");
    succeeds(&train_args(m, s(&v4), d, s(&kept), &[]));
    assert!(layer_keys_in(&kept, ON_DISK), "{:?}", keys(&kept));
    assert_eq!(config(&kept)["target_modules"], config(&v4)["target_modules"]);

    // Asked for transformers 5's naming: keys and spelled-out targets in it.
    let five = dir.join("five");
    let out = run_env(&train_args(m, s(&v4), d, s(&five), &[]), &[("PEFT_WGPU_LORA_NAMING", "transformers5")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(layer_keys_in(&five, TRANSFORMERS5), "{:?}", keys(&five));
    let targets = config(&five)["target_modules"].clone();
    assert!(
        targets.as_array().expect("a list").iter().all(|t| t.as_str().is_some_and(|t| t.starts_with(TRANSFORMERS5)))
    );

    // A new adapter: transformers 5's naming, and the model class for AutoPeftModel.
    let fresh_config = dir.join("lora.json");
    std::fs::write(
        &fresh_config,
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value"]}"#,
    )
    .expect("config");
    let fresh = |out: &Path| {
        let args = ["train", "--model", m, "--adapter-config", s(&fresh_config), "--data", d, "--out", s(out)];
        [&args[..], &["--steps", "1", "--batch-size", "2"]].concat().into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let new5 = dir.join("new5");
    let args = fresh(&new5);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("PEFT_WGPU_LORA_NAMING"),
        "no note for a transformers-5 model"
    );
    assert!(layer_keys_in(&new5, TRANSFORMERS5), "{:?}", keys(&new5));
    let written = config(&new5);
    assert_eq!(written["auto_mapping"]["base_model_class"], "ViTForImageClassification", "{written}");
    assert_eq!(written["auto_mapping"]["parent_library"], "transformers.models.vit.modeling_vit", "{written}");

    // The same for a model transformers 4 saved, with a note saying how to get its naming;
    // asked for, the on-disk naming.
    edit_json(&model.join("config.json"), |c| c["transformers_version"] = "4.57.6".into());
    let noted = dir.join("noted");
    let args = fresh(&noted);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("transformers 4.57.6") && stderr.contains("PEFT_WGPU_LORA_NAMING=transformers4"),
        "{stderr}"
    );
    assert!(layer_keys_in(&noted, TRANSFORMERS5));
    let four = dir.join("four");
    let args = fresh(&four);
    let out =
        run_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[("PEFT_WGPU_LORA_NAMING", "transformers4")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("PEFT_WGPU_LORA_NAMING"), "no note once chosen: {stderr}");
    assert!(layer_keys_in(&four, ON_DISK), "{:?}", keys(&four));
    assert_eq!(config(&four)["target_modules"], serde_json::json!(["query", "value"]));

    // A value that is neither is a usage error naming the variable, before any work.
    let args = fresh(&dir.join("never"));
    let out = run_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[("PEFT_WGPU_LORA_NAMING", "tf4")]);
    check_failure(&out, USAGE, &["PEFT_WGPU_LORA_NAMING", "tf4", "transformers4"], true);
    assert!(!dir.join("never").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// A process id that has ended: a child that ran and was waited for.
#[cfg(target_os = "linux")]
fn ended_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("`true` runs");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

#[cfg(target_os = "linux")]
#[test]
fn probes_a_killed_run_left_are_removed_by_the_next_run() {
    let dir = scratch("stale-probes");
    let data = good_data(&dir);
    let (model, init) = (fixture("vit_tiny"), fixture("adapters/flora"));
    let out = adapter_copy("flora", &dir);
    let (dead, alive) = (ended_pid(), std::process::id());
    // In --out, a probe file of an ended run and of a live one; in its parent, the first
    // folder of an ended run's probe of new folders, with what it held; and look-alikes.
    let stale_file = out.join(format!(".peft-wgpu-probe-of-a-long-name.tmp-{dead}-0"));
    let live_file = out.join(format!(".peft-wgpu-probe-of-a-long-name.tmp-{alive}-0"));
    let stale_folder = dir.join(format!(".peft-wgpu-probe-{dead}-1-xxx"));
    let nested = stale_folder.join("a").join(format!(".peft-wgpu-probe-of-a-long-name.tmp-{dead}-2"));
    let look_alikes =
        [out.join(format!(".peft-wgpu-probe-of-a-long-name.tmp-{dead}-0.keep")), dir.join(".peft-wgpu-probe-notes")];
    for f in [&stale_file, &live_file, &look_alikes[0], &look_alikes[1]] {
        std::fs::write(f, b"").expect("probe");
    }
    std::fs::create_dir_all(nested.parent().expect("parent")).expect("folders");
    std::fs::write(&nested, b"").expect("probe");
    // A probe lives for microseconds: those a killed run left are older than a minute; a
    // dead run's probe of just now may be another machine's on a shared folder, and stays.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for old in [&stale_file, &live_file, &look_alikes[0]] {
        std::fs::File::options().write(true).open(old).expect("probe").set_modified(hour_ago).expect("mtime");
    }
    std::fs::File::open(&stale_folder).expect("folder").set_modified(hour_ago).expect("mtime");
    let recent = out.join(format!(".peft-wgpu-probe-of-a-long-name.tmp-{dead}-7"));
    std::fs::write(&recent, b"").expect("probe");
    // A new nested --out probes from the scratch folder; the other run's --out holds the file probes.
    let new_out = dir.join("new").join("deeper");
    succeeds(&train_args(s(&model), s(&init), s(&data), s(&new_out), &[]));
    succeeds(&train_args(s(&model), s(&init), s(&data), s(&out), &["--force"]));
    assert!(!stale_file.exists() && !stale_folder.exists(), "an ended run's probes stay");
    assert!(live_file.exists(), "a live run's probe was removed");
    assert!(recent.exists(), "a probe of just now was removed");
    for f in &look_alikes {
        assert!(f.exists(), "{} was removed", f.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}
