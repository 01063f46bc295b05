//! Outputs through the binary (SPEC §11, §14): an `--out` holding an adapter or a model is
//! kept unless `--force`, and kept through a failed run; mixed adapter pairs are refused by
//! name; `--logits-out` never overwrites an input and, like `demo --svg`, writes into pipes;
//! stdout that closes or fills is not an internal error; an adapter saved meanwhile by
//! another run is not overwritten; fractional `--epochs` run the steps they cover.

mod cli_support;

use cli_support::*;
#[cfg(unix)]
use std::os::unix::fs::FileTypeExt;

// ---------------------------------------------------------------------------------------
// Writing

#[test]
fn an_existing_adapter_is_kept_without_force_and_through_a_failed_run() {
    let dir = scratch("overwrite");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = adapter_copy("flora", &dir);
    let before = snapshot(&out);
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    fails(&train_args(m, l, d, o, &[]), USAGE, &["--out", "already holds an adapter", "--force"]);
    assert_eq!(snapshot(&out), before, "--out changed without --force");
    // A run that diverges stops with the step and leaves the old adapter byte-identical.
    let line = check_failure(
        &run(&["train", "--model", m, "--init", l, "--data", d, "--out", o, "--force", "--steps", "5"]
            .into_iter()
            .chain(["--lr", "1e30", "--optimizer", "sgd"])
            .collect::<Vec<_>>()),
        TRAINING,
        &["step 2 of the run", "learning rate"],
        false,
    );
    assert!(line.contains("NaN") || line.contains("inf"), "{line}");
    assert_eq!(snapshot(&out), before, "a failed run changed --out");
    // --force replaces an adapter, never this run's data.
    let theirs = dir.join("theirs");
    let data_inside = copy_dir(&out, &theirs).join("adapter_model.safetensors");
    std::fs::copy(d, &data_inside).expect("data where the weights go");
    let kept = snapshot(&theirs);
    fails(
        &train_args(m, l, s(&data_inside), s(&theirs), &["--force"]),
        USAGE,
        &["--out", "is this run's --data", "choose another folder"],
    );
    assert_eq!(snapshot(&theirs), kept, "the data was replaced");
    // merge refuses a folder that holds an adapter or a model.
    let merged = dir.join("merged");
    succeeds(&["merge", "--model", m, "--adapter", l, "--out", s(&merged)]);
    let merged_before = snapshot(&merged);
    fails(&["merge", "--model", m, "--adapter", l, "--out", s(&merged)], USAGE, &["--out", "--force"]);
    fails(&["merge", "--model", m, "--adapter", l, "--out", o], USAGE, &["--out", "holds an adapter"]);
    fails(&["merge", "--model", m, "--adapter", l, "--out", o, "--force"], USAGE, &["--out", "holds an adapter"]);
    fails(&["merge", "--model", m, "--adapter", l, "--out", m], USAGE, &["--out", m, "--model folder"]);
    assert_eq!(snapshot(&merged), merged_before);
    assert_eq!(snapshot(&out), before);
    let moppa = fixture("adapters/moppa");
    fails(&["merge", "--model", m, "--adapter", s(&moppa), "--out", s(&dir.join("m2"))], USAGE, &["MoPPA", "eval"]);
    // train never saves an adapter into a model folder: transformers would apply it there.
    for extra in [&[][..], &["--force"][..]] {
        fails(&train_args(m, l, d, s(&merged), extra), USAGE, &["--out", "holds a model"]);
    }
    assert_eq!(snapshot(&merged), merged_before);
    // Nor into the shards of one whose config is missing: the index marks it.
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).expect("shards folder");
    std::fs::write(shards.join("model.safetensors.index.json"), r#"{"weight_map": {}}"#).expect("index");
    fails(&train_args(m, l, d, s(&shards), &["--force"]), USAGE, &["--out", "holds a model"]);
    // An --out that is a link to nowhere is refused before training, not after.
    #[cfg(unix)]
    {
        let link = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("no/such/folder"), &link).expect("symlink");
        fails(&train_args(m, l, d, s(&link), &[]), USAGE, &["--out", "dangling", "symbolic link"]);
        fails(&train_args(m, l, d, s(&link.join("sub")), &[]), USAGE, &["--out", "symbolic link"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the binary under a file size limit of `kib` KiB (bash's `ulimit -f`).
#[cfg(target_os = "linux")]
fn run_with_file_size_limit(kib: u32, args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .args(["-c", &format!("ulimit -f {kib} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_peft-wgpu")])
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("bash runs")
}

/// Past `ulimit -f` the kernel stops a writer with SIGXFSZ, which prints nothing; the writes
/// are checked against the limit first, so the run ends with a message and keeps `--out`.
#[cfg(target_os = "linux")]
#[test]
fn a_file_size_limit_below_an_output_is_named_and_keeps_the_previous_files() {
    let dir = scratch("fsize");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = adapter_copy("flora", &dir);
    let before = snapshot(&out);
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    let weights = std::fs::metadata(lora.join("adapter_model.safetensors")).expect("weights").len();
    assert!(weights > 4096, "the LoRA fixture's weights ({weights} bytes) fit in the limit");
    let args = ["train", "--model", m, "--init", l, "--data", d, "--out", o, "--force", "--steps", "1"];
    let line =
        check_failure(&run_with_file_size_limit(4, &args), INPUT, &["adapter_model.safetensors", "ulimit -f"], false);
    assert!(line.contains("4096 bytes"), "{line}");
    assert_eq!(snapshot(&out), before, "a run stopped by the file size limit changed --out");
    assert_eq!(names_with(&out, "."), Vec::<String>::new(), "temporaries left in --out");
    let merged = dir.join("merged");
    let args = ["merge", "--model", m, "--adapter", l, "--out", s(&merged)];
    check_failure(&run_with_file_size_limit(4, &args), INPUT, &["model.safetensors", "ulimit -f"], false);
    assert!(!merged.join("config.json").exists(), "a merged model was left half-written");
    // A limit the files fit in does not get in the way.
    assert!(run_with_file_size_limit(1 << 20, &args).status.success(), "merge under a 1 GiB limit failed");
    std::fs::remove_dir_all(&dir).ok();
}

/// A write past `ulimit -f` that the outputs' check does not cover (here stderr sent to a
/// file; on an H200, most likely the driver's shader cache) fails instead of ending the
/// process with SIGXFSZ: the run ends with its own exit code, having lost the line.
#[cfg(unix)]
#[test]
fn a_write_past_the_file_size_limit_elsewhere_does_not_end_the_run() {
    let dir = scratch("fsize-stderr");
    let log = dir.join("stderr.txt");
    let (missing, merged) = (dir.join("no-such-model"), dir.join("merged"));
    let args = ["merge", "--model", s(&missing), "--adapter", s(&missing), "--out", s(&merged)];
    // The run's exit code and the size of what reached its stderr file, under `limit` (a
    // `ulimit -f` argument; none when empty).
    let run = |limit: &str| {
        let output = std::process::Command::new("bash")
            .args(["-c", "{ [ -z \"$LIMIT\" ] || ulimit -f \"$LIMIT\"; } && exec \"$0\" \"$@\" 2> \"$STDERR_FILE\""])
            .arg(env!("CARGO_BIN_EXE_peft-wgpu"))
            .args(args)
            .env("LIMIT", limit)
            .env("STDERR_FILE", &log)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .expect("bash runs");
        (output.status, std::fs::metadata(&log).expect("the stderr file").len())
    };
    let (status, logged) = run("0");
    assert_eq!(status.code(), Some(INPUT), "{status:?}");
    assert_eq!(logged, 0, "a line got past the limit");
    // Without the limit the same run writes its error there: the limited run did try to.
    let (status, logged) = run("");
    assert_eq!(status.code(), Some(INPUT), "{status:?}");
    assert!(logged > 0, "no error line without a limit");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_init_folder_of_another_adapter_type_is_named() {
    let dir = scratch("init-type");
    let data = good_data(&dir);
    let (model, flora) = (fixture("vit_tiny"), fixture("adapters/flora"));
    let lora_config = fixture("adapters/lora_v4/adapter_config.json");
    let out = dir.join("out");
    let args = ["train", "--model", s(&model), "--adapter-config", s(&lora_config), "--init", s(&flora)];
    let args: Vec<&str> = args.into_iter().chain(["--data", s(&data), "--out", s(&out), "--steps", "1"]).collect();
    fails(&args, USAGE, &["--init", "FLORA", "LORA"]);
    assert!(!out.exists(), "nothing written");
    // Of the same type, but a config whose ranks the folder's tensors do not have.
    let rank2 = dir.join("rank2.json");
    std::fs::write(&rank2, r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#).expect("config");
    let lora = fixture("adapters/lora_v4");
    let args = ["train", "--model", s(&model), "--adapter-config", s(&rank2), "--init", s(&lora)];
    let args: Vec<&str> = args.into_iter().chain(["--data", s(&data), "--out", s(&out), "--steps", "1"]).collect();
    fails(&args, INPUT, &["lora_A.weight", "[4, 16]", "[2, 16]", "rank2.json", "saved beside these weights"]);
    assert!(!out.exists(), "nothing written");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_hand_edited_config_is_read_as_it_stands_whatever_the_files_times() {
    let dir = scratch("pair");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = dir.join("out");
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    succeeds(&train_args(m, l, d, o, &[]));
    let logits = dir.join("logits.safetensors");
    let eval = ["eval", "--model", m, "--adapter", o, "--data", d, "--logits-out", s(&logits)];
    succeeds(&eval);
    let saved_logits = std::fs::read(&logits).expect("logits");
    // lora_alpha doubled by hand: read as it stands (PEFT reads it so too), with the config
    // older than the weights (a copy or checkout in that order) and newer (an edit).
    let config = out.join("adapter_config.json");
    let weights_time =
        std::fs::metadata(out.join("adapter_model.safetensors")).and_then(|m| m.modified()).expect("mtime");
    let saved = std::fs::read_to_string(&config).expect("config");
    let edited = saved.replace("\"lora_alpha\": 6", "\"lora_alpha\": 12");
    assert!(edited.contains("\"lora_alpha\": 12"), "the saved config changed shape: {edited}");
    let mut outputs = Vec::new();
    for shift in [-60i64, 60] {
        std::fs::write(&config, &edited).expect("edit");
        let when = if shift < 0 {
            weights_time - std::time::Duration::from_secs(60)
        } else {
            weights_time + std::time::Duration::from_secs(60)
        };
        std::fs::File::options().write(true).open(&config).and_then(|f| f.set_modified(when)).expect("set mtime");
        succeeds(&eval);
        outputs.push(std::fs::read(&logits).expect("logits"));
    }
    assert_eq!(outputs[0], outputs[1], "the files' times change nothing");
    assert_ne!(outputs[0], saved_logits, "the edited lora_alpha is used");
    std::fs::remove_dir_all(&dir).ok();
}

/// Stdout closed by its reader (`peft-wgpu eval … | head -1`) ends the run quietly; stdout
/// that cannot be written (a full disk) is an error naming `<stdout>`; neither is reported
/// as an internal error.
#[test]
fn stdout_closed_or_full_is_not_an_internal_error() {
    use std::process::{Command, Stdio};
    let dir = scratch("stdout");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let eval = ["eval", "--model", s(&model), "--data", s(&data)];
    let command = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"));
        cmd.args(eval).env("XDG_RUNTIME_DIR", std::env::temp_dir()).stderr(Stdio::piped());
        cmd
    };
    // A pipe whose reader is gone before anything is written.
    let mut child = command().stdout(Stdio::piped()).spawn().expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "closed stdout: {:?}\n{stderr}", out.status);
    assert!(!stderr.contains("error"), "closed stdout reported: {stderr}");
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
        let out = command().stdout(full).output().expect("run");
        check_failure(&out, INPUT, &["<stdout>", "No space left"], false);
        // So is help that cannot be written.
        for args in [&["--help"][..], &["train", "--help"]] {
            let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
            let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu")).args(args).stdout(full).output().expect("run");
            check_failure(&out, INPUT, &["<stdout>", "No space left"], true);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `--logits-out` naming an input of the run (the data, a file of the model or adapter
/// folders) is refused before anything is read or written.
#[test]
fn logits_out_never_overwrites_an_input() {
    let dir = scratch("logits-input");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let before = std::fs::read(&data).expect("data");
    let (m, d) = (s(&model), s(&data));
    fails(&["eval", "--model", m, "--data", d, "--logits-out", d], USAGE, &["--logits-out", "input"]);
    assert_eq!(std::fs::read(&data).expect("data"), before, "the data was overwritten");
    let weights = model.join("model.safetensors");
    fails(&["eval", "--model", m, "--data", d, "--logits-out", s(&weights)], USAGE, &["--logits-out", "input"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Output file names longer than the file system allows (255 bytes on Linux's) are refused
/// before any work, naming the flag (`--logits-out`, `demo --svg`; `--out` below).
#[cfg(unix)]
#[test]
fn output_names_too_long_for_the_file_system_are_refused_before_any_work() {
    let dir = scratch("long-names");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let (m, d) = (s(&model), s(&data));
    let long = dir.join(format!("{}.safetensors", "x".repeat(300)));
    let line = fails(&["eval", "--model", m, "--data", d, "--logits-out", s(&long)], USAGE, &["--logits-out"]);
    assert!(line.contains("its name (312 bytes) or path is longer than the file system"), "{line}");
    let svg = dir.join(format!("{}.svg", "y".repeat(300)));
    fails(&["demo", "--steps", "1", "--svg", s(&svg)], USAGE, &["--svg", "its name (304 bytes)"]);
    let leftovers: Vec<String> = names_with(&dir, ".peft-wgpu-probe");
    assert!(leftovers.is_empty(), "probes left behind: {leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--logits-out` and `demo --svg` naming a file that makes an adapter or model folder (its
/// config, weights or a shard), or an existing file of another kind than theirs, are
/// refused, whether or not the folder is part of the run or is such a folder at all and the
/// file exists, and the folder is left as it was; another file in such a folder is written. A folder holding only PyTorch's `adapter_model.bin` holds an adapter for `--out`.
#[test]
fn outputs_never_replace_a_file_of_an_adapter_or_model_folder() {
    let dir = scratch("logits-folders");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let (m, d) = (s(&model), s(&data));
    let adapter = adapter_copy("flora", &dir);
    let other_model = copy_dir(&model, &dir.join("other_model"));
    let (adapter_before, model_before) = (snapshot(&adapter), snapshot(&other_model));
    let victims = [
        adapter.join("adapter_model.safetensors"),
        adapter.join("adapter_config.json"),
        other_model.join("model.safetensors"),
        other_model.join("config.json"),
        other_model.join("model-00001-of-00002.safetensors"),
    ];
    for victim in &victims {
        let v = s(victim);
        fails(
            &["eval", "--model", m, "--data", d, "--logits-out", v],
            USAGE,
            &["--logits-out", "adapter or model folder"],
        );
        fails(&["demo", "--steps", "1", "--svg", v], USAGE, &["--svg", "adapter or model folder"]);
    }
    assert_eq!(snapshot(&adapter), adapter_before, "the adapter folder changed");
    assert_eq!(snapshot(&other_model), model_before, "the model folder changed");
    // Those names in a folder that is neither are refused too: written, the file would make
    // it look like one (and no longer load as what it is meant to be).
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).expect("folder");
    let names = ["model.safetensors", "adapter_config.json", "adapter_model.safetensors", "config.json"];
    // In any case, and with trailing dots or spaces (one file on macOS and Windows).
    let spelled = ["CONFIG.JSON", "Adapter_Config.json", "model-00001-of-00002.safetensors", "config.json."];
    for name in names.into_iter().chain(spelled) {
        let v = plain.join(name);
        fails(
            &["eval", "--model", m, "--data", d, "--logits-out", s(&v)],
            USAGE,
            &["--logits-out", name, "another name"],
        );
        fails(&["demo", "--steps", "1", "--svg", s(&v)], USAGE, &["--svg", name, "another name"]);
    }
    assert_eq!(std::fs::read_dir(&plain).expect("folder").count(), 0, "nothing written");
    // A name that only looks like a shard's makes no model folder and is written.
    let best = plain.join("model-best-of-3.safetensors");
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&best)]);
    assert!(best.is_file(), "logits written under a name that is no shard's");
    let beside = adapter.join("logits.safetensors");
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&beside)]);
    assert!(beside.is_file(), "a file of another name in an adapter folder is written");
    // An existing file is replaced only by an output of its kind: logits by logits, a plot
    // by a plot; data, or anything else, is kept.
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&beside)]);
    let other_data = dir.join("other.safetensors");
    std::fs::copy(&data, &other_data).expect("a copy of the data");
    let kept = std::fs::read(&other_data).expect("data");
    fails(&["eval", "--model", m, "--data", d, "--logits-out", s(&other_data)], USAGE, &["exists", "logits file"]);
    fails(&["demo", "--steps", "1", "--svg", s(&other_data)], USAGE, &["exists", "SVG plot"]);
    fails(&["demo", "--steps", "1", "--svg", s(&beside)], USAGE, &["exists", "SVG plot"]);
    assert_eq!(std::fs::read(&other_data).expect("data"), kept, "the data was replaced");

    let pickled = dir.join("pickled");
    std::fs::create_dir_all(&pickled).expect("folder");
    std::fs::write(pickled.join("adapter_model.bin"), b"pickle").expect("bin");
    let lora = fixture("adapters/lora_v4");
    fails(&train_args(m, s(&lora), d, s(&pickled), &[]), USAGE, &["--out", "already holds an adapter"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Reads the FIFO at `path` to its end on a thread of its own; [`received`] gets the bytes.
/// (A reader left blocked by a regression, the pipe never written, ends with the process.)
#[cfg(unix)]
fn read_in_background(path: &std::path::Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (send, receive) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || send.send(std::fs::read(path).expect("read the fifo")));
    receive
}

/// What the reader of [`read_in_background`] got, failing the test if nothing came in a
/// minute (the pipe never written, or replaced).
#[cfg(unix)]
fn received(reader: &std::sync::mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    reader.recv_timeout(std::time::Duration::from_secs(60)).expect("nothing came through the pipe")
}

/// `--logits-out` into a pipe or device writes into it (a rename would replace the special
/// file), and through a symbolic link replaces the link's target, keeping the link.
#[cfg(unix)]
#[test]
fn logits_out_writes_into_pipes_and_devices_and_through_links() {
    let dir = scratch("logits-special");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let (m, d) = (s(&model), s(&data));
    let plain = dir.join("plain.safetensors");
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&plain)]);
    let want = std::fs::read(&plain).expect("logits");

    let fifo = fifo(&dir, "fifo");
    let reader = read_in_background(&fifo);
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&fifo)]);
    assert_eq!(received(&reader), want, "the logits through the pipe");
    assert!(std::fs::symlink_metadata(&fifo).expect("fifo").file_type().is_fifo(), "the pipe was replaced");

    // (`/dev/null` takes the same path as the pipe; it is not written here, so that a
    // regression cannot replace the machine's /dev/null.)
    let target = dir.join("target.safetensors");
    std::fs::write(&target, b"").expect("target");
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    succeeds(&["eval", "--model", m, "--data", d, "--logits-out", s(&link)]);
    assert!(std::fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read(&target).expect("target"), want, "the link's target holds the logits");
    std::fs::remove_dir_all(&dir).ok();
}

/// `demo --svg` writes the way `--logits-out` does: into a pipe, and through a link.
#[cfg(unix)]
#[test]
fn demo_svg_writes_into_pipes_and_through_links() {
    let dir = scratch("demo-svg");
    let fifo = fifo(&dir, "fifo");
    let reader = read_in_background(&fifo);
    succeeds(&["demo", "--steps", "1", "--svg", s(&fifo)]);
    assert!(std::fs::symlink_metadata(&fifo).expect("fifo").file_type().is_fifo(), "the pipe was replaced");
    assert!(received(&reader).starts_with(b"<svg"), "the plot through the pipe");

    let target = dir.join("target.svg");
    std::fs::write(&target, b"<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>").expect("target");
    let link = dir.join("link.svg");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let piped = run(&["demo", "--steps", "1", "--svg", s(&link)]);
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    // Progress on a pipe: a line per method, no bar.
    let progress = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(progress.matches("done: held-out accuracy").count(), 5, "{progress}");
    assert!(!progress.contains('\r'), "a bar drawn into a pipe: {progress:?}");
    assert!(std::fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read(&target).expect("target").starts_with(b"<svg"), "the link's target holds the plot");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_adapter_another_run_saved_meanwhile_is_not_overwritten_without_force() {
    // Two runs into the same new --out: the check at start-up passes for both, so the one that
    // finishes second must look again before saving. The other run is simulated by a Progress
    // that writes an adapter into --out when training starts.
    struct OtherRun(std::path::PathBuf);
    impl peft_wgpu::cli::Progress for OtherRun {
        fn started(&mut self, _summary: &str, _steps: usize) {
            copy_dir(&fixture("adapters/flora"), &self.0);
        }
    }
    let dir = scratch("race");
    let out = dir.join("out");
    let args = peft_wgpu::cli::TrainArgs {
        model: fixture("vit_tiny"),
        adapter_config: None,
        data: good_data(&dir),
        out: out.clone(),
        init: Some(fixture("adapters/lora_v4")),
        steps: Some(1),
        epochs: None,
        batch_size: 2,
        lr: 1e-3,
        optimizer: peft_wgpu::OptimizerKind::sgd(),
        seed: 0,
        shuffle: false,
        eval_data: None,
        force: false,
    };
    let err = peft_wgpu::cli::train(&args, &mut OtherRun(out.clone())).expect_err("the other run's adapter is kept");
    assert!(err.to_string().contains("another run") && err.to_string().contains("--force"), "{err}");
    assert_eq!(snapshot(&out), snapshot(&fixture("adapters/flora")), "the other run's adapter is untouched");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fractional_epochs_run_the_steps_they_cover() {
    let dir = scratch("epochs");
    let data = dir.join("ten.safetensors");
    write_data(&data, [10, 3, 8, 8], &[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    let (model, lora) = (fixture("vit_tiny"), fixture("adapters/lora_v4"));
    // (E, B, steps): ceil(E·N/B) for N = 10, by hand; 0.7 × 10 is 7.000000000000001 in f64.
    for (epochs, batch, steps) in [("0.5", 3, 2), ("2.5", 4, 7), ("0.01", 2, 1), ("0.7", 7, 1), ("3", 10, 3)] {
        let out = dir.join(format!("out-{epochs}"));
        let args = ["train", "--model", s(&model), "--init", s(&lora), "--data", s(&data), "--out", s(&out)];
        let batch_text = batch.to_string();
        let extra = ["--epochs", epochs, "--batch-size", batch_text.as_str(), "--optimizer", "sgd"];
        let stdout = succeeds(&args.into_iter().chain(extra).collect::<Vec<_>>());
        let plural = if steps == 1 { "" } else { "s" };
        assert!(stdout.contains(&format!("trained {steps} step{plural},")), "--epochs {epochs}, B {batch}: {stdout}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A model with merged RLP prompts: `merge` and `train` on it say on stderr that only this
/// crate inserts them (transformers' ViT ignores `prompt_embeddings`).
#[test]
fn a_model_with_merged_prompts_is_pointed_out() {
    let dir = scratch("prompts-note");
    let data = good_data(&dir);
    let (model, merged, out) = (fixture("vit_tiny"), dir.join("merged"), dir.join("lora"));
    let rlp = fixture("adapters/rlp");
    let merging = run(&["merge", "--model", s(&model), "--adapter", s(&rlp), "--out", s(&merged)]);
    assert!(merging.status.success(), "{}", String::from_utf8_lossy(&merging.stderr));
    let note = String::from_utf8_lossy(&merging.stderr).into_owned();
    assert!(note.contains("3 merged RLP prompt tokens") && note.contains("ignores"), "{note}");
    let lora = fixture("adapters/lora_v5");
    let training = run(&train_args(s(&merged), s(&lora), s(&data), s(&out), &[]));
    assert!(training.status.success(), "{}", String::from_utf8_lossy(&training.stderr));
    let note = String::from_utf8_lossy(&training.stderr).into_owned();
    assert!(note.contains("3 merged RLP prompt tokens"), "{note}");
    // A model without prompts gets no such note.
    let plain = run(&train_args(s(&model), s(&lora), s(&data), s(&dir.join("plain")), &[]));
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("prompt token"));
    std::fs::remove_dir_all(&dir).ok();
}

/// An `--out` the file system cannot hold (a name longer than its 255-byte limit) is refused
/// before any training, with the path cut short in the message, and the folders the check
/// made on the way are gone again.
#[cfg(unix)]
#[test]
fn an_out_name_too_long_is_refused_before_training() {
    let dir = scratch("long-out");
    let data = good_data(&dir);
    let long = dir.join("new").join("x".repeat(300));
    let lora = fixture("adapters/lora_v5");
    let started = std::time::Instant::now();
    let line = fails(
        &train_args(s(&fixture("vit_tiny")), s(&lora), s(&data), s(&long), &[]),
        USAGE,
        &["--out", "a name in it is longer than the file system allows", "…"],
    );
    assert!(line.len() < 600, "the message carries the whole path: {line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "refused only after training: {line}");
    assert!(!dir.join("new").exists(), "the check left the folder it made");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--logits-out` with the longest name a file system takes is written: its temporary, which
/// sits beside it, is named to fit too.
#[cfg(unix)]
#[test]
fn a_logits_out_of_the_longest_name_is_written() {
    let dir = scratch("long-logits");
    let data = good_data(&dir);
    let out = dir.join("l".repeat(255));
    let model = fixture("vit_tiny");
    succeeds(&["eval", "--model", s(&model), "--data", s(&data), "--logits-out", s(&out)]);
    assert!(out.is_file(), "no logits at the 255-byte name");
    let names: Vec<_> = std::fs::read_dir(&dir).expect("list").flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 2, "data and logits only: {names:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A merged model lists the adapters folded into it, so the same adapter is not applied to
/// it again by `eval`, `merge` (`--force` or not) or `train --init`; another adapter, and the
/// base model, are unaffected, and a model merged from two adapters lists both.
#[test]
fn an_adapter_is_not_applied_twice_to_the_model_it_was_merged_into() {
    let dir = scratch("merged-twice");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let (lora, flora) = (fixture("adapters/lora_v4"), fixture("adapters/flora"));
    let (merged, again, out) = (dir.join("merged"), dir.join("again"), dir.join("out"));
    let (m, d, l) = (s(&model), s(&data), s(&lora));
    succeeds(&["merge", "--model", m, "--adapter", l, "--out", s(&merged)]);
    let twice = ["already merged into the model", "lora_v4", "count it twice"];
    fails(&["eval", "--model", s(&merged), "--adapter", l, "--data", d], USAGE, &twice);
    fails(&["merge", "--model", s(&merged), "--adapter", l, "--out", s(&again)], USAGE, &twice);
    fails(&train_args(s(&merged), l, d, s(&out), &[]), USAGE, &[&["--init"][..], &twice].concat());
    assert!(!again.exists() && !out.exists(), "a refused run wrote its output");
    succeeds(&["eval", "--model", s(&merged), "--data", d]);
    succeeds(&["eval", "--model", m, "--adapter", l, "--data", d]);
    succeeds(&["eval", "--model", s(&merged), "--adapter", s(&flora), "--data", d]);
    // Merging in place needs --force, which does not let the adapter in a second time.
    fails(&["merge", "--model", s(&merged), "--adapter", l, "--out", s(&merged), "--force"], USAGE, &twice);
    succeeds(&["eval", "--model", s(&merged), "--data", d]);
    // Another adapter merged on top: both are listed.
    succeeds(&["merge", "--model", s(&merged), "--adapter", s(&flora), "--out", s(&again)]);
    fails(&["eval", "--model", s(&again), "--adapter", l, "--data", d], USAGE, &twice);
    fails(&["eval", "--model", s(&again), "--adapter", s(&flora), "--data", d], USAGE, &["flora", "count it twice"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A FLoRA adapter (a type PEFT never reads) trained on from a config in the other naming
/// than its keys reads back: its modules are found under either naming.
#[test]
fn flora_trained_on_under_the_other_naming_reads_back() {
    let dir = scratch("flora-namings");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let (v5, disk) = (dir.join("v5.json"), dir.join("disk.json"));
    std::fs::write(&v5, r#"{"peft_type": "FLORA", "r": 2, "scale": 1.0, "target_modules": ["q_proj", "v_proj"]}"#)
        .unwrap();
    std::fs::write(&disk, r#"{"peft_type": "FLORA", "r": 2, "scale": 1.0, "target_modules": ["query", "value"]}"#)
        .unwrap();
    let (first, second) = (dir.join("first"), dir.join("second"));
    let (m, d) = (s(&model), s(&data));
    succeeds(&["train", "--model", m, "--adapter-config", s(&v5), "--data", d, "--out", s(&first), "--steps", "1"]);
    let again = ["train", "--model", m, "--init", s(&first), "--adapter-config", s(&disk), "--data", d];
    succeeds(&[&again[..], &["--out", s(&second), "--steps", "1"]].concat());
    succeeds(&["eval", "--model", m, "--adapter", s(&second), "--data", d]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The saved config names the model trained on as `base_model_name_or_path`, as PEFT does,
/// whatever the given config said (PEFT's AutoPeftModel loaders would load that one); the
/// run says so when it replaces another name.
#[test]
fn the_saved_config_names_the_model_trained_on() {
    let dir = scratch("base-model-name");
    let data = good_data(&dir);
    let config = dir.join("lora.json");
    let named = |name: serde_json::Value| {
        let cfg = serde_json::json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"],
                                     "base_model_name_or_path": name});
        std::fs::write(&config, cfg.to_string()).expect("config");
    };
    let model = fixture("vit_tiny");
    for (name, note) in [(serde_json::json!("google/vit-base-patch16-224"), true), (serde_json::json!(null), false)] {
        named(name.clone());
        let out = dir.join("out");
        let args = ["train", "--model", s(&model), "--adapter-config", s(&config), "--data", s(&data)];
        let ran = run(&[&args[..], &["--out", s(&out), "--steps", "1", "--force"]].concat());
        assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).expect("saved")).expect("json");
        assert_eq!(saved["base_model_name_or_path"], s(&model), "{name}");
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert_eq!(stderr.contains("google/vit-base-patch16-224") && stderr.contains("base model"), note, "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An output file that is where this run's stdout goes (`--logits-out /dev/stdout > file`)
/// is refused: replaced by a rename, it would take the run's result lines with it.
#[cfg(target_os = "linux")]
#[test]
fn an_output_that_is_the_runs_own_stdout_file_is_refused() {
    let dir = scratch("own_stdout");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let log = dir.join("stdout.txt");
    std::fs::write(&log, b"earlier lines\n").expect("log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["eval", "--model", s(&model), "--data", s(&data), "--logits-out", "/dev/stdout"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::fs::OpenOptions::new().append(true).open(&log).expect("open"))
        .output()
        .expect("the binary runs");
    let line = check_failure(&out, USAGE, &["--logits-out", "/dev/stdout", "standard output"], true);
    assert!(line.contains("a file of its own"), "{line}");
    assert_eq!(std::fs::read(&log).expect("log"), b"earlier lines\n", "the stdout file was replaced");
}

/// Under a working folder whose absolute path is longer than the system spells out
/// (PATH_MAX), inputs are still told from outputs: `--force` does not replace this run's
/// data, and an earlier logits file is replaced.
#[cfg(target_os = "linux")]
#[test]
fn a_working_folder_deeper_than_path_max_changes_no_check() {
    let dir = scratch("deep_cwd");
    let data = good_data(&dir);
    let (model, lora) = (fixture("vit_tiny"), fixture("adapters/lora_v4"));
    let script = r#"set -e
cd "$1"; part=$(printf 'd%.0s' $(seq 250)); for i in $(seq 18); do mkdir "$part"; cd "$part"; done
test "$(pwd | wc -c)" -gt 4096
mkdir own; cp "$2" own/adapter_model.safetensors; before=$(cksum < own/adapter_model.safetensors)
set +e
"$3" train --model "$4" --init "$5" --data own/adapter_model.safetensors --out own --force --steps 1
echo "train exit $?"
test "$before" = "$(cksum < own/adapter_model.safetensors)" && echo "data kept"
"$3" eval --model "$4" --data own/adapter_model.safetensors --logits-out l.safetensors > /dev/null && \
"$3" eval --model "$4" --data own/adapter_model.safetensors --logits-out l.safetensors > /dev/null
echo "logits exit $?""#;
    let out = std::process::Command::new("bash")
        .args(["-c", script, "deep", s(&dir), s(&data), env!("CARGO_BIN_EXE_peft-wgpu"), s(&model), s(&lora)])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("train exit {USAGE}")) && stdout.contains("data kept"), "{stdout}\n{stderr}");
    assert!(stderr.contains("is this run's --data"), "{stderr}");
    assert!(stdout.contains("logits exit 0"), "{stdout}\n{stderr}");
    let _ = std::process::Command::new("rm").args(["-rf", s(&dir)]).status();
}
