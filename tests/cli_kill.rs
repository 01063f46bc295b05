//! Killing a training run (SIGKILL on Unix) never leaves a half-written adapter in `--out`
//! and never destroys the previous one (SPEC §11): killed while training or while writing
//! its temporaries, `--out` holds the old adapter byte-identical; killed in the instant
//! between the two renames, the next reader finishes the save (the weights' rename is the
//! commit point), and any other mixed pair is refused by name when loaded. The same holds
//! for a merged model folder, and two saves into one folder never interleave.
//!
//! The write is slowed with the test hook `PEFT_WGPU_TEST_SLOW_WRITE_MS` (see
//! `src/io/atomic/mod.rs`), so the kill lands where each test wants it.

mod cli_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cli_support::*;

const SLOW_WRITE_ENV: &str = "PEFT_WGPU_TEST_SLOW_WRITE_MS";

/// Starts `train` from the LoRA fixture into `out` (over the adapter there) for `steps`.
fn start_training(out: &Path, data: &Path, steps: &str, slow_write_ms: Option<u64>) -> Child {
    let (model, init) = (fixture("vit_tiny"), fixture("adapters/lora_v4"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"));
    cmd.args(["train", "--model", s(&model), "--init", s(&init)])
        .args(["--data", s(data), "--out", s(out), "--force", "--steps", steps, "--batch-size", "2"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ms) = slow_write_ms {
        cmd.env(SLOW_WRITE_ENV, ms.to_string());
    }
    cmd.spawn().expect("the binary starts")
}

/// Starts 2 training steps into `out` with slowed writes and returns once the new weights are
/// renamed into place (the commit point); the config follows after a pause of 3 s.
fn train_until_the_weights_are_renamed(out: &Path, data: &Path) -> Child {
    let old_weights = std::fs::read(out.join("adapter_model.safetensors")).expect("weights");
    let mut child = start_training(out, data, "2", Some(3_000));
    wait_for(&mut child, Duration::from_secs(120), "the weights to be renamed", || {
        std::fs::read(out.join("adapter_model.safetensors")).is_ok_and(|b| b != old_weights)
    });
    child
}

/// Waits until the child's first training step is about to run: it prints the
/// trainable-parameter line on its piped stderr then.
fn wait_for_training(child: &mut Child) {
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("trainable params") {
                let _ = tx.send(());
            }
        }
    });
    wait_for(child, Duration::from_secs(120), "training to start", || rx.try_recv().is_ok());
}

/// SIGKILLs the child and checks it was killed, not finished.
fn kill(child: &mut Child) {
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the run finished before it was killed");
}

#[test]
fn killed_while_training_the_previous_adapter_is_untouched() {
    let dir = scratch("kill-train");
    let data = good_data(&dir);
    let out = adapter_copy("flora", &dir);
    let before = snapshot(&out);
    let mut child = start_training(&out, &data, "100000000", None);
    wait_for_training(&mut child);
    std::thread::sleep(Duration::from_millis(500));
    kill(&mut child);
    assert_eq!(snapshot(&out), before, "a run killed while training changed --out");
    assert_eq!(std::fs::read_dir(&out).expect("list").count(), 2, "a killed run left files in --out");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn killed_while_writing_the_previous_adapter_is_untouched_and_the_next_reader_or_save_cleans_up() {
    let dir = scratch("kill-write");
    let data = good_data(&dir);
    let out = adapter_copy("flora", &dir);
    let before = snapshot(&out);
    let mut child = start_training(&out, &data, "2", Some(2_000));
    // Both temporaries exist (the weights' whole, the config's half written, the writer
    // paused): nothing may have replaced the old files yet.
    wait_for(&mut child, Duration::from_secs(120), "the second temporary", || {
        !names_with(&out, ".adapter_config.json.tmp-").is_empty()
    });
    assert_eq!(names_with(&out, ".adapter_model.safetensors.tmp-").len(), 1, "the weights' temporary is missing");
    kill(&mut child);
    assert_eq!(
        snapshot(&out).into_iter().filter(|(n, _)| !n.starts_with('.')).collect::<Vec<_>>(),
        before,
        "a run killed while writing changed the adapter in --out"
    );
    // The next reader (holding the folder's lock, so no save is under way) reads the old
    // adapter and removes the killed save's temporaries.
    let model = fixture("vit_tiny");
    assert!(!names_with(&out, ".").is_empty(), "the killed save left its temporaries");
    succeeds(&["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)]);
    assert!(names_with(&out, ".").is_empty(), "temporaries left after a read: {:?}", names_with(&out, "."));
    assert_eq!(snapshot(&out), before, "the reader changed the adapter");
    // Killed again the same way, the next save removes them and writes a whole adapter.
    let mut child = start_training(&out, &data, "2", Some(2_000));
    wait_for(&mut child, Duration::from_secs(120), "the second temporary", || {
        !names_with(&out, ".adapter_config.json.tmp-").is_empty()
    });
    kill(&mut child);
    let init = fixture("adapters/lora_v4");
    let args = [
        "train",
        "--model",
        s(&model),
        "--init",
        s(&init),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--force",
        "--steps",
        "1",
    ];
    succeeds(&args);
    assert!(names_with(&out, ".").is_empty(), "temporaries left: {:?}", names_with(&out, "."));
    succeeds(&["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn killed_between_the_two_renames_the_next_reader_finishes_the_save() {
    let dir = scratch("kill-rename");
    let data = good_data(&dir);
    let out = adapter_copy("flora", &dir);
    let old_config = std::fs::read(out.join("adapter_config.json")).expect("config");
    let mut child = train_until_the_weights_are_renamed(&out, &data);
    kill(&mut child);
    // No reader (PEFT included) finds the new weights beside the old config: it was moved
    // aside before the weights' rename.
    assert!(!out.join("adapter_config.json").exists(), "the old config beside the new weights");
    let aside = names_with(&out, ".adapter_config.json.old-");
    assert_eq!(aside.len(), 1, "the old config is kept aside: {aside:?}");
    assert_eq!(std::fs::read(out.join(&aside[0])).expect("old config"), old_config);
    let pending = names_with(&out, ".adapter_config.json.tmp-");
    assert_eq!(pending.len(), 1, "the new config waits under its temporary name: {pending:?}");
    let new_config = std::fs::read(out.join(&pending[0])).expect("pending config");
    // The save had committed (the weights are in place): the next reader renames the config.
    let model = fixture("vit_tiny");
    let eval = ["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)];
    succeeds(&eval);
    assert_eq!(std::fs::read(out.join("adapter_config.json")).expect("config"), new_config);
    assert!(names_with(&out, ".").is_empty(), "left after recovery: {:?}", names_with(&out, "."));
    // With no temporary waiting, another config beside the weights (the saved one with its
    // `lora_alpha` edited by hand) is the user's choice, read as it stands, as PEFT reads it.
    let config = out.join("adapter_config.json");
    let edited =
        String::from_utf8(new_config.clone()).expect("utf-8").replace("\"lora_alpha\": 6", "\"lora_alpha\": 12");
    assert_ne!(edited.as_bytes(), new_config.as_slice(), "the saved config changed shape");
    std::fs::write(&config, &edited).expect("edited config");
    succeeds(&eval);
    assert_eq!(std::fs::read(&config).expect("config"), edited.as_bytes(), "a reader changes no config");
    std::fs::remove_dir_all(&dir).ok();
}

/// `merge --force` killed between its two renames: the merged weights are in place beside
/// the old config, and the next reader of the folder finishes the save, so it evaluates as
/// the new merged model (transformers would otherwise see a mixed folder).
#[test]
fn merge_killed_between_the_two_renames_the_next_reader_finishes_it() {
    let dir = scratch("kill-merge");
    let data = good_data(&dir);
    let (model, out) = (fixture("vit_tiny"), dir.join("merged"));
    // The previous merged model, with the RLP adapter's 3-label head.
    succeeds(&["merge", "--model", s(&model), "--adapter", s(&fixture("adapters/rlp")), "--out", s(&out)]);
    let old_weights = std::fs::read(out.join("model.safetensors")).expect("weights");
    let old_config = std::fs::read(out.join("config.json")).expect("config");
    let lora = fixture("adapters/lora_v4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["merge", "--model", s(&model), "--adapter", s(&lora), "--out", s(&out), "--force"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env(SLOW_WRITE_ENV, "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    wait_for(&mut child, Duration::from_secs(120), "the merged weights to be renamed", || {
        std::fs::read(out.join("model.safetensors")).is_ok_and(|b| b != old_weights)
    });
    kill(&mut child);
    assert!(!out.join("config.json").exists(), "the old config beside the new weights");
    let aside = names_with(&out, ".config.json.old-");
    assert_eq!(aside.len(), 1, "the old config is kept aside: {aside:?}");
    assert_eq!(std::fs::read(out.join(&aside[0])).expect("old config"), old_config);
    assert_eq!(names_with(&out, ".config.json.tmp-").len(), 1, "the new config waits under its temporary name");
    // The merged LoRA model evaluates exactly as the base model with the adapter.
    let (merged_logits, adapter_logits) = (dir.join("merged.safetensors"), dir.join("adapter.safetensors"));
    succeeds(&["eval", "--model", s(&out), "--data", s(&data), "--logits-out", s(&merged_logits)]);
    let with_adapter = ["--adapter", s(&lora), "--data", s(&data), "--logits-out", s(&adapter_logits)];
    succeeds(&[&["eval", "--model", s(&model)][..], &with_adapter].concat());
    assert!(names_with(&out, ".").is_empty(), "left after recovery: {:?}", names_with(&out, "."));
    let logits = |p: &Path| {
        let (_, _, shape, bytes) = read_tensors(p).into_iter().find(|t| t.0 == "logits").expect("logits");
        let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        (shape, values)
    };
    let ((shape, merged), (want_shape, want)) = (logits(&merged_logits), logits(&adapter_logits));
    assert_eq!(shape, want_shape, "logits of the finished merge: the new 5-label head");
    for (m, a) in merged.iter().zip(&want) {
        assert!((m - a).abs() <= 1e-5 * a.abs().max(1.0), "merged {m} vs adapter {a}");
    }
    // A merge into a new folder killed at the same moment leaves no config.json yet: the
    // next reader finishes it as well, rather than find no model folder there.
    let fresh = dir.join("fresh");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["merge", "--model", s(&model), "--adapter", s(&lora), "--out", s(&fresh)])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env(SLOW_WRITE_ENV, "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    wait_for(&mut child, Duration::from_secs(120), "the merged weights to be renamed", || {
        fresh.join("model.safetensors").is_file()
    });
    kill(&mut child);
    assert!(!fresh.join("config.json").exists(), "killed before the config");
    let fresh_logits = dir.join("fresh.safetensors");
    succeeds(&["eval", "--model", s(&fresh), "--data", s(&data), "--logits-out", s(&fresh_logits)]);
    assert!(fresh.join("config.json").is_file() && names_with(&fresh, ".config.json.tmp-").is_empty());
    assert_eq!(logits(&fresh_logits), logits(&merged_logits), "the finished merge is the same model");
    std::fs::remove_dir_all(&dir).ok();
}

/// Two `train --force` runs of different adapters (LoRA from its fixture, a fresh FLoRA)
/// saving into one `--out` at once, their slowed writes overlapping: both succeed, one after
/// the other, and the folder holds one whole adapter of either type, not a mix.
#[test]
fn two_saves_into_one_folder_do_not_interleave() {
    let dir = scratch("two-saves");
    let data = good_data(&dir);
    let out = adapter_copy("lora_v4", &dir);
    let flora_config = fixture("adapters/flora/adapter_config.json");
    let lora = start_training(&out, &data, "1", Some(400));
    let flora = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["train", "--model", s(&fixture("vit_tiny")), "--adapter-config", s(&flora_config)])
        .args(["--data", s(&data), "--out", s(&out), "--force", "--steps", "1", "--batch-size", "2"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env(SLOW_WRITE_ENV, "400")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    for run in [lora, flora] {
        let output = run.wait_with_output().expect("wait");
        assert!(output.status.success(), "a run failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&out).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["adapter_config.json", "adapter_model.safetensors"], "temporaries left");
    succeeds(&["eval", "--model", s(&fixture("vit_tiny")), "--adapter", s(&out), "--data", s(&data)]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A rename that fails after the commit point (here the config's: a folder took its place
/// while the writer paused between the renames) ends the run with an error that says the
/// save is incomplete and where the rest waits; the config's temporary is kept, not removed,
/// and the next reader finishes the save once the obstacle is gone.
#[test]
fn a_rename_failing_after_the_commit_point_keeps_the_rest_for_the_next_reader() {
    let dir = scratch("late-rename");
    let data = good_data(&dir);
    let out = adapter_copy("flora", &dir);
    let child = train_until_the_weights_are_renamed(&out, &data);
    // The old config is aside by now.
    let config = out.join("adapter_config.json");
    std::fs::create_dir(&config).expect("a folder where the config goes");
    let finished = child.wait_with_output().expect("the run ends");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(!finished.status.success(), "a save whose config was not renamed succeeded: {stderr}");
    let pending = names_with(&out, ".adapter_config.json.tmp-");
    assert_eq!(pending.len(), 1, "the config's temporary is kept: {pending:?}");
    assert!(stderr.contains("incomplete") && stderr.contains(&pending[0]), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let new_config = std::fs::read(out.join(&pending[0])).expect("pending config");
    std::fs::remove_dir(&config).expect("the obstacle removed");
    let model = fixture("vit_tiny");
    succeeds(&["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)]);
    assert_eq!(std::fs::read(&config).expect("config"), new_config, "the reader finished the save");
    assert!(names_with(&out, ".").is_empty(), "left after recovery: {:?}", names_with(&out, "."));
    std::fs::remove_dir_all(&dir).ok();
}

/// Killed after moving the old config aside but before its commit point (the weights'
/// rename): the folder holds the old weights and no config, which any reader reports rather
/// than misreads, and the next reader of ours puts the old config back: the old adapter,
/// byte for byte.
#[test]
fn killed_before_the_commit_point_with_the_config_aside_the_next_reader_puts_it_back() {
    let dir = scratch("kill-aside");
    let data = good_data(&dir);
    let out = adapter_copy("flora", &dir);
    let before = snapshot(&out);
    let mut child = start_training(&out, &data, "2", Some(3_000));
    wait_for(&mut child, Duration::from_secs(120), "the old config to be moved aside", || {
        !names_with(&out, ".adapter_config.json.old-").is_empty()
    });
    kill(&mut child);
    assert!(!out.join("adapter_config.json").exists());
    let model = fixture("vit_tiny");
    succeeds(&["eval", "--model", s(&model), "--adapter", s(&out), "--data", s(&data)]);
    assert_eq!(snapshot(&out), before, "the old adapter, whole, and nothing else");
    std::fs::remove_dir_all(&dir).ok();
}

/// Sends `signal` (a `kill` name: `INT`, `TERM`, `HUP`) to the child.
#[cfg(unix)]
fn send(child: &Child, signal: &str) {
    let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().expect("kill");
    assert!(sent.success(), "kill -{signal} failed");
}

/// Sends `signal` (a `kill` name: `INT`, `TERM`, `HUP`) to the child and waits for it: it ends
/// by that signal, as without a handler.
#[cfg(unix)]
fn signal(child: &mut Child, signal: &str, number: i32) {
    use std::os::unix::process::ExitStatusExt;
    send(child, signal);
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(number), "ended by SIG{signal}: {status:?}");
}

/// Whether this process was started with signal `number` ignored (as under `nohup`, or as a
/// script's background job), which the runs it starts inherit (Linux's `/proc/self/status`).
#[cfg(unix)]
fn ignored_here(number: i32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("a SigIgn line");
    u64::from_str_radix(mask.trim(), 16).expect("a hexadecimal mask") & (1 << (number - 1)) != 0
}

/// Ctrl-C, SIGTERM or SIGHUP while a save writes its temporaries: the run ends by the signal
/// and removes them, so `--out` holds the previous adapter and nothing beside it; the same
/// for `eval --logits-out`, which leaves no hidden partial file. A signal that the tests run
/// with ignored is ignored by the run too, which then saves as usual.
#[cfg(unix)]
#[test]
fn a_run_stopped_by_a_signal_while_writing_leaves_no_temporaries() {
    let dir = scratch("signal-write");
    let data = good_data(&dir);
    for (name, number) in [("INT", 2), ("TERM", 15), ("HUP", 1)] {
        let out = copy_dir(&fixture("adapters/flora"), &dir.join(format!("out-{name}")));
        let before = snapshot(&out);
        let mut child = start_training(&out, &data, "2", Some(3_000));
        wait_for(&mut child, Duration::from_secs(120), "a temporary", || !names_with(&out, ".").is_empty());
        if ignored_here(number) {
            send(&child, name);
            assert!(child.wait().expect("wait").success(), "the run ended on SIG{name}, which it ignores");
            assert!(names_with(&out, ".").is_empty(), "temporaries left by a finished save");
            continue;
        }
        signal(&mut child, name, number);
        assert_eq!(snapshot(&out), before, "SIG{name} while writing changed --out or left files in it");
    }
    // A save into a new folder: the folders it made go with its temporaries.
    let fresh = dir.join("new").join("out");
    let mut child = start_training(&fresh, &data, "2", Some(3_000));
    wait_for(&mut child, Duration::from_secs(120), "a temporary", || {
        fresh.is_dir() && !names_with(&fresh, ".").is_empty()
    });
    if !ignored_here(15) {
        signal(&mut child, "TERM", 15);
        assert!(!dir.join("new").exists(), "folders left by an interrupted save into a new folder");
    }
    let logits = dir.join("logits");
    std::fs::create_dir(&logits).expect("folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["eval", "--model", s(&fixture("vit_tiny")), "--data", s(&data)])
        .args(["--logits-out", s(&logits.join("l.safetensors"))])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env(SLOW_WRITE_ENV, "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    wait_for(&mut child, Duration::from_secs(120), "the logits' temporary", || !names_with(&logits, ".").is_empty());
    assert!(!ignored_here(15), "the tests run with SIGTERM ignored");
    signal(&mut child, "TERM", 15);
    assert_eq!(std::fs::read_dir(&logits).expect("list").count(), 0, "files left by an interrupted --logits-out");
    // A signal ignored when the run started (as `nohup` ignores SIGHUP) stays ignored.
    let (model, init) = (fixture("vit_tiny"), fixture("adapters/lora_v4"));
    let script = format!(
        "trap '' HUP; exec '{}' train --model '{}' --init '{}' --data '{}' --out '{}' --force --steps 100000000",
        env!("CARGO_BIN_EXE_peft-wgpu"),
        s(&model),
        s(&init),
        s(&data),
        s(&dir.join("nohup-out"))
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    wait_for_training(&mut child);
    send(&child, "HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().expect("status").is_none(), "an ignored SIGHUP ended the run");
    signal(&mut child, "TERM", 15);
    std::fs::remove_dir_all(&dir).ok();
}
