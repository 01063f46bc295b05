//! Helpers for the tests that run the `peft-wgpu` binary on bad inputs: a scratch folder per
//! test, copies of the fixtures to break, data files, and the checks every failure must pass
//! (exit code, the culprit named, one short line, no panic text).
#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Exit codes of the binary (src/bin/peft-wgpu/main.rs).
pub const USAGE: i32 = 2;
/// Bad file, tensor, config or data.
pub const INPUT: i32 = 3;
/// GPU, driver or device limits.
pub const DEVICE: i32 = 4;
/// Training diverged.
pub const TRAINING: i32 = 5;

/// Text that must never reach a user.
const PANIC_TEXT: [&str; 5] = ["panicked", "RUST_BACKTRACE", "internal error", "stack backtrace", "this is a bug"];

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-wgpu-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Copies every file of folder `src` into a new folder `dst`.
pub fn copy_dir(src: &Path, dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst).expect("copy target");
    for entry in std::fs::read_dir(src).expect("copy source") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy file");
    }
    dst.to_path_buf()
}

/// The tiny ViT copied to `dir/model`.
pub fn model_copy(dir: &Path) -> PathBuf {
    copy_dir(&fixture("vit_tiny"), &dir.join("model"))
}

/// Fixture adapter `name` copied to `dir/<name>`.
pub fn adapter_copy(name: &str, dir: &Path) -> PathBuf {
    copy_dir(&fixture(&format!("adapters/{name}")), &dir.join(name))
}

/// A path as a `&str` argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Raw little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file of `(name, dtype, shape, bytes)` entries.
pub fn write_tensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, shape, b)| (k.to_string(), TensorView::new(*d, shape.clone(), b).expect("consistent view")))
        .collect();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).expect("serialize");
    std::fs::write(path, bytes).expect("write tensors");
}

/// Every tensor of a safetensors file: name → (dtype, shape, bytes).
pub fn read_tensors(path: &Path) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("read tensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid file");
    let mut out: Vec<_> =
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Rewrites a safetensors file through `edit` on its entries.
pub fn edit_tensors(path: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let mut t = read_tensors(path);
    edit(&mut t);
    let refs: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> =
        t.iter().map(|(k, d, s, b)| (k.as_str(), *d, s.clone(), b.clone())).collect();
    write_tensors(path, &refs);
}

/// Rewrites a JSON file through `edit`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("valid json");
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).expect("json")).expect("write json");
}

/// Writes a data file: `n` images of `c×h×w` (a smooth pattern) with `labels` (I64).
pub fn write_data(path: &Path, [n, c, h, w]: [usize; 4], labels: &[i64]) {
    let pixels: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let labels: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    write_tensors(
        path,
        &[
            ("labels", Dtype::I64, vec![labels.len() / 8], labels),
            ("pixel_values", Dtype::F32, vec![n, c, h, w], f32_bytes(&pixels)),
        ],
    );
}

/// A good data file for the tiny ViT (6 images, labels 0..5) at `dir/data.safetensors`.
pub fn good_data(dir: &Path) -> PathBuf {
    let path = dir.join("data.safetensors");
    write_data(&path, [6, 3, 8, 8], &[0, 1, 2, 3, 4, 0]);
    path
}

/// A FIFO made at `dir/name` (Unix).
pub fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    path
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    run_env::<&str>(args, &[])
}

/// How long one run may take before it counts as hung (a read from a pipe nobody writes,
/// say): it is killed and the test fails, rather than blocking the suite.
const PATIENCE: Duration = Duration::from_secs(600);

/// Runs the binary with `args` and extra environment variables (stdin empty, as
/// [`Command::output`] has it), failing the test if it runs past [`PATIENCE`].
pub fn run_env<V: AsRef<std::ffi::OsStr>>(args: &[&str], env: &[(&str, V)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"));
    cmd.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary runs");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the binary") {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!("peft-wgpu {args:?} ran past {PATIENCE:?} (hung?); stderr:\n{}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().expect("reader thread");
    Output { status, stdout: join(stdout), stderr: join(stderr) }
}

/// Reads `stream` to its end on a thread of its own (so neither pipe of a child fills up).
fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Asserts the run failed with `code`, its error names every one of `culprits`, and it is one
/// short line without panic text. With `before_gpu`, also that training never started (the
/// trainable-parameter line is printed once the model and adapter are on the GPU). Returns
/// the error line.
pub fn check_failure(out: &Output, code: i32, culprits: &[&str], before_gpu: bool) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(code), "exit status {:?}, expected {code}; stderr:\n{stderr}", out.status);
    for bad in PANIC_TEXT {
        assert!(!stderr.contains(bad) && !stdout.contains(bad), "panic text `{bad}` in the output:\n{stderr}");
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("peft-wgpu: error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{stderr}");
    let line = errors[0];
    assert!(line.len() < 400, "error line too long ({} chars): {line}", line.len());
    for c in culprits {
        assert!(line.contains(c), "the error does not name `{c}`: {line}");
    }
    if before_gpu {
        assert!(!stderr.contains("trainable params"), "the error came after GPU work started:\n{stderr}");
    }
    line.to_string()
}

/// Runs `args` and checks the failure (see [`check_failure`]), for errors found before any
/// GPU work.
pub fn fails(args: &[&str], code: i32, culprits: &[&str]) -> String {
    check_failure(&run(args), code, culprits, true)
}

/// Asserts the run succeeded; returns stdout.
pub fn succeeds(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "peft-wgpu {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bytes of every file in `dir`, by name (for byte-identical checks).
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("snapshot folder")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read")))
        .collect();
    v.sort();
    v
}

/// `train` on `model` from adapter folder `init` with `data`, into `out`, for `extra` flags.
pub fn train_args<'a>(model: &'a str, init: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--model", model, "--init", init, "--data", data, "--out", out, "--steps", "1"];
    v.extend_from_slice(extra);
    v
}

/// Waits until `ready()` holds, polling every 5 ms; kills the child and fails after `limit`.
pub fn wait_for(child: &mut std::process::Child, limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before {what}");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Names in `dir` that start with `prefix`.
pub fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}
