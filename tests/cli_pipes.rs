//! Pipes, devices and huge sparse files through the binary (SPEC §14: no hang, no partial
//! output): data may arrive through a pipe, read once; pipes and devices inside model and
//! adapter folders are refused rather than opened; configs are read only up to their size
//! limit. Unix only (FIFOs and symbolic links); a run that hangs fails after
//! `cli_support`'s patience instead of blocking the suite.
#![cfg(unix)]

mod cli_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use cli_support::*;

#[test]
fn data_may_arrive_through_a_pipe_once() {
    let data = std::fs::read(fixture("train_data.safetensors")).expect("data");
    let run_piped = |bytes: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
            .args(["eval", "--model", s(&fixture("vit_tiny")), "--data", "/dev/stdin"])
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // The binary may stop reading early (a bad header): a broken pipe here is fine.
        let _ = child.stdin.take().expect("stdin").write_all(bytes);
        child.wait_with_output().expect("output")
    };
    let out = run_piped(&data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("accuracy"));
    check_failure(&run_piped(&data[..data.len() - 9]), INPUT, &["/dev/stdin", "truncated"], true);
    let mut longer = data;
    longer.extend_from_slice(b"tail");
    let line =
        check_failure(&run_piped(&longer), INPUT, &["/dev/stdin", "unexpected bytes after the last tensor"], true);
    assert!(!line.contains("1 unexpected"), "a stream is read one byte past its end, no further: {line}");
    check_failure(&run_piped(b"abc"), INPUT, &["/dev/stdin", "only 3 bytes"], true);
    // One pipe can be read once: as --data and --eval-data both, it is refused up front.
    let dir = scratch("pipe-twice");
    let pipe = fifo(&dir, "fifo");
    let (model, lora, out) = (fixture("vit_tiny"), fixture("adapters/lora_v4"), dir.join("out"));
    let args = train_args(s(&model), s(&lora), s(&pipe), s(&out), &["--eval-data", s(&pipe)]);
    fails(&args, USAGE, &["--eval-data", "fifo", "same input as --data", "read only once"]);
    fails(
        &train_args(s(&model), s(&lora), "/dev/stdin", s(&out), &["--eval-data", "/dev/stdin"]),
        USAGE,
        &["--eval-data", "same input as --data", "read only once"],
    );
    // So is one stream as the adapter config and the data.
    let m = s(&model);
    let config_and_data =
        ["train", "--model", m, "--adapter-config", "/dev/stdin", "--data", "/dev/stdin", "--out", s(&out)];
    fails(&config_and_data, USAGE, &["--data", "same input as --adapter-config", "read only once"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Pipes and devices inside model and adapter folders (also through links) are refused, not
/// opened: a pipe without a writer would wait forever, a device never ends. The folders are
/// ones this crate saved, whose weights' stamp of their config is read first.
#[test]
fn pipes_and_devices_inside_folders_are_refused() {
    let dir = scratch("special-in-folders");
    let data = good_data(&dir);
    let model = copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits_vit"), &dir.join("sm"));
    let adapter = copy_dir(&fixture("written_here/lora_transformers5"), &dir.join("sa"));
    let pipe = fifo(&dir, "fifo");
    let tiny = fixture("vit_tiny");
    for (folder, file) in [
        (&model, "config.json"),
        (&model, "model.safetensors"),
        (&adapter, "adapter_config.json"),
        (&adapter, "adapter_model.safetensors"),
    ] {
        let saved = folder.join("saved");
        std::fs::rename(folder.join(file), &saved).expect("move aside");
        for special in [pipe.as_path(), Path::new("/dev/zero")] {
            std::os::unix::fs::symlink(special, folder.join(file)).expect("symlink");
            let args: Vec<&str> = if folder == &model {
                vec!["eval", "--model", s(folder), "--data", s(&data)]
            } else {
                vec!["eval", "--model", s(&tiny), "--adapter", s(folder), "--data", s(&data)]
            };
            fails(&args, INPUT, &[file, "pipe, socket or device"]);
            std::fs::remove_file(folder.join(file)).expect("remove link");
        }
        std::fs::rename(&saved, folder.join(file)).expect("move back");
    }
    // A config of 64 GiB (sparse) beside stamped weights is read only up to the size limit,
    // by the stamp check as by the config reader (read whole, it would exhaust memory).
    std::fs::File::create(model.join("config.json")).and_then(|f| f.set_len(64 << 30)).expect("sparse");
    fails(&["eval", "--model", s(&model), "--data", s(&data)], INPUT, &["sm/config.json", "too large"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A pipe or device where a save would put a file is refused up front, `--force` or not
/// (renaming over it would destroy it), and so is a folder (which a rename cannot replace);
/// so is finishing an interrupted save over a pipe.
#[test]
fn saves_never_replace_pipes_or_devices() {
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch("special-outputs");
    let data = good_data(&dir);
    let (model, lora) = (fixture("vit_tiny"), fixture("adapters/lora_v4"));
    let is_fifo = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo());

    let out = dir.join("adapter-out");
    std::fs::create_dir(&out).expect("out");
    let config = fifo(&out, "adapter_config.json");
    let args = train_args(s(&model), s(&lora), s(&data), s(&out), &["--force"]);
    fails(&args, USAGE, &["--out", "adapter_config.json", "pipe, socket or device"]);
    assert!(is_fifo(&config), "the pipe was replaced");
    // A folder under a file's name is refused before the training too, not at its save.
    let folder_out = dir.join("folder-out");
    std::fs::create_dir_all(folder_out.join("adapter_model.safetensors")).expect("folder");
    let args = train_args(s(&model), s(&lora), s(&data), s(&folder_out), &["--force"]);
    fails(&args, USAGE, &["--out", "adapter_model.safetensors", "is a folder"]);
    let args = ["merge", "--model", s(&model), "--adapter", s(&lora), "--out", s(&folder_out), "--force"];
    std::fs::rename(folder_out.join("adapter_model.safetensors"), folder_out.join("model.safetensors")).expect("mv");
    fails(&args, USAGE, &["--out", "model.safetensors", "is a folder"]);

    let merged = dir.join("model-out");
    std::fs::create_dir(&merged).expect("out");
    let weights = fifo(&merged, "model.safetensors");
    let args = ["merge", "--model", s(&model), "--adapter", s(&lora), "--out", s(&merged), "--force"];
    fails(&args, USAGE, &["--out", "model.safetensors", "pipe, socket or device"]);
    assert!(is_fifo(&weights), "the pipe was replaced");

    // Stamped weights beside a config that is a pipe, and a leftover temporary of their own
    // config (a save killed between its renames): the pipe is neither renamed over nor read.
    let stamped = copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits_vit"), &dir.join("sm"));
    let pid_temp = stamped.join(".config.json.tmp-999999");
    std::fs::rename(stamped.join("config.json"), &pid_temp).expect("temporary");
    let config = fifo(&stamped, "config.json");
    fails(&["eval", "--model", s(&stamped), "--data", s(&data)], INPUT, &["config.json", "pipe, socket or device"]);
    assert!(is_fifo(&config), "the pipe was replaced");
    std::fs::remove_dir_all(&dir).ok();
}

/// A stderr that cannot be written (`/dev/full`; a log pipe whose reader left) costs the
/// progress lines and notes, not the run: training still saves its adapter, and a bad flag
/// still gets its own exit code rather than an abort.
#[test]
fn an_unwritable_stderr_loses_only_the_messages() {
    let dir = scratch("stderr-full");
    let data = good_data(&dir);
    let out = dir.join("out");
    let with_full_stderr = |args: &[&str]| {
        let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
        Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
            .args(args)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(full)
            .output()
            .expect("the binary runs")
    };
    let lora = fixture("adapters/lora_v5");
    let trained = with_full_stderr(&train_args(s(&fixture("vit_tiny")), s(&lora), s(&data), s(&out), &[]));
    assert!(trained.status.success(), "train with stderr on /dev/full: {}", trained.status);
    assert!(out.join("adapter_model.safetensors").is_file(), "the adapter was saved");
    let missing = with_full_stderr(&["eval", "--model", s(&fixture("vit_tiny")), "--data", s(&dir.join("none"))]);
    assert_eq!(missing.status.code(), Some(INPUT), "a missing --data with stderr on /dev/full");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--data` may be a named pipe whose writer starts after the reader: the pipe is opened
/// once and read once (opening it a second time would wait for a writer that has gone).
#[test]
fn data_from_a_named_pipe_written_later_is_read_once() {
    let dir = scratch("named-pipe-data");
    let pipe = fifo(&dir, "data");
    let data = std::fs::read(fixture("train_data.safetensors")).expect("data");
    let child = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["eval", "--model", s(&fixture("vit_tiny")), "--data", s(&pipe)])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&pipe, &data).expect("the reader takes the data");
    let mut child = child;
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("eval hung on a named pipe written once");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("accuracy"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A file whose size the system does not know (procfs reports 0 bytes for a file with
/// contents) is read for what it holds, so the message says what is wrong with it, not that
/// it is empty; a really empty file is named as such.
#[cfg(target_os = "linux")]
#[test]
fn a_file_of_unknown_size_is_read_for_its_contents() {
    let dir = scratch("procfs");
    let model = fixture("vit_tiny");
    let eval = |data: &str| -> Vec<String> {
        ["eval", "--model", s(&model), "--data", data].iter().map(|a| a.to_string()).collect()
    };
    let args = eval("/proc/self/status");
    let line = fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        INPUT,
        &["/proc/self/status", "not a safetensors file"],
    );
    assert!(!line.contains("only 0 bytes"), "{line}");
    let empty = dir.join("empty.safetensors");
    std::fs::create_dir_all(&dir).expect("folder");
    std::fs::write(&empty, b"").expect("empty file");
    let args = eval(s(&empty));
    fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), INPUT, &["empty.safetensors", "only 0 bytes"]);
    std::fs::remove_dir_all(&dir).ok();
}
