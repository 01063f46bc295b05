//! Benchmark workloads of SPEC §13 (`peft-wgpu bench [--json]`).
//!
//! Every workload first checks its result against the f64 CPU twins of [`crate::reference`]
//! (on a small instance of the same code path, or on the full instance where that is cheap)
//! and refuses to report a time when they disagree. It then runs `warmup` untimed
//! repetitions and `repeats` timed ones and reports the median (SPEC §13): `ms` is wall time
//! of a run ended by [`Gpu::sync`] inside the timed region (submission and waiting
//! included), and where the device has timestamp queries `gpu_ms` is the device time
//! between GPU timestamps recorded before and after each run ([`Gpu::timer`]), with
//! `gpu_gflops` / `gpu_gbps` from it. The training steps also report the peak device bytes
//! of one step
//! ([`Gpu::memory`] after [`Gpu::reset_peak_memory`]) and the kernel dispatches it records.
//!
//! | name | measures |
//! | --- | --- |
//! | `matmul_1024` | `[1024×1024]·[1024×1024]`, `gflops` = 2·1024³/time |
//! | `spectral_filter_64x14x14x768` | MoPPA operator forward, `gbps` = 2·bytes of `x`/time |
//! | `vitb_block_lora_train_step_b8` | ViT-B/16 layer, batch 8, LoRA r 8 α 16 on query, value |
//! | `vitb_block_moppa_train_step_b8` | the same layer with the MoPPA pre-filter |
//! | `vitb_block_full_train_step_b8` | the same layer, every weight trained (memory reference) |
//! | `tiny_vit_train_step_b64` | the demo-sized ViT, batch 64, MoPPA + classifier |
//!
//! The ViT-B layer steps compute `loss = mean(y²)` of the layer output, backpropagate to the
//! trainable tensors and to the input, and take an AdamW step.
//!
//! Environment: `PEFT_WGPU_BENCH_FILTER` (run only workloads whose name contains it; one
//! that no name contains is refused),
//! `PEFT_WGPU_BENCH_REPEATS` (timed repetitions, default per workload) and
//! `PEFT_WGPU_PROFILE=1` (time every dispatch alone and print the time per kernel of each
//! workload on stderr; this serialises the device, so the workload times grow).

mod kernels;
mod layer;
mod twin;

use std::time::Instant;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

pub use layer::{LayerTraining, vitb_layer_config};

/// The size of every workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The sizes of SPEC §13.
    Full,
    /// Small instances of the same code paths, for tests: nothing is worth timing.
    Tiny,
}

/// What to run and how often.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sizes of the workloads.
    pub size: Size,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs; `None` uses each workload's default.
    pub repeats: Option<usize>,
    /// Run only workloads whose name contains this.
    pub filter: Option<String>,
}

impl BenchOptions {
    /// The full workloads, one warm-up run, each workload's default repeats.
    pub fn full() -> BenchOptions {
        BenchOptions { size: Size::Full, warmup: 1, repeats: None, filter: None }
    }

    /// Tiny instances, no warm-up, one run each: exercises every code path quickly.
    pub fn tiny() -> BenchOptions {
        BenchOptions { size: Size::Tiny, warmup: 0, repeats: Some(1), filter: None }
    }

    /// [`BenchOptions::full`] with `PEFT_WGPU_BENCH_FILTER` and `PEFT_WGPU_BENCH_REPEATS`; a
    /// filter that no workload's name contains, or a count that is not a whole number ≥ 1,
    /// is an error naming the variable.
    pub fn from_env() -> Result<BenchOptions> {
        let mut options = BenchOptions::full();
        options.filter = crate::io::env_var("PEFT_WGPU_BENCH_FILTER")?.filter(|f| !f.is_empty());
        check_filter("PEFT_WGPU_BENCH_FILTER", options.filter.as_deref())?;
        if let Some(r) = crate::io::env_var("PEFT_WGPU_BENCH_REPEATS")? {
            let n: usize = r.parse().map_err(|_| Error::invalid("PEFT_WGPU_BENCH_REPEATS", format!("`{r}`")))?;
            if n == 0 {
                return Err(Error::invalid("PEFT_WGPU_BENCH_REPEATS", "must be at least 1"));
            }
            options.repeats = Some(n);
        }
        Ok(options)
    }

    fn repeats(&self, default: usize) -> usize {
        self.repeats.unwrap_or(default).max(1)
    }
}

/// The measurement of one workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Workload name (SPEC §13).
    pub name: String,
    /// Median wall time of one run ended by a device synchronisation (submitting and
    /// waiting included), in milliseconds.
    pub ms: f64,
    /// All timed runs' wall times, in milliseconds, in the order they ran.
    pub runs_ms: Vec<f64>,
    /// Median device time of one run between GPU timestamps, where the device has them.
    pub gpu_ms: Option<f64>,
    /// Floating-point throughput by `ms`, where it applies.
    pub gflops: Option<f64>,
    /// The same by `gpu_ms`.
    pub gpu_gflops: Option<f64>,
    /// Memory throughput by `ms`, where it applies.
    pub gbps: Option<f64>,
    /// The same by `gpu_ms`.
    pub gpu_gbps: Option<f64>,
    /// Highest live device bytes during one run (model, optimizer state and activations).
    pub peak_bytes: Option<u64>,
    /// Of which allocated during the run (activations, gradients, temporaries).
    pub step_bytes: Option<u64>,
    /// Kernel dispatches one run records.
    pub dispatches: u64,
    /// Largest relative error of the check against the CPU twin.
    pub check_error: f64,
    /// What the check compared.
    pub checked: String,
    /// Anything else worth printing (e.g. which model a workload used).
    pub note: Option<String>,
}

impl Report {
    /// A report of `name` with its times; the caller adds rates and checks.
    pub(crate) fn timed(name: &str, t: Timing) -> Report {
        Report {
            name: name.into(),
            ms: t.median,
            runs_ms: t.runs,
            gpu_ms: t.gpu_median,
            dispatches: t.dispatches,
            ..Report::default()
        }
    }

    /// One JSON object: `name`, `ms`, then the optional fields that apply.
    pub fn to_json(&self) -> String {
        let mut o = Map::new();
        o.insert("name".into(), self.name.clone().into());
        o.insert("ms".into(), round(self.ms, 3).into());
        if let Some(g) = self.gflops {
            o.insert("gflops".into(), round(g, 3).into());
        }
        if let Some(g) = self.gbps {
            o.insert("gbps".into(), round(g, 3).into());
        }
        if let Some(g) = self.gpu_ms {
            o.insert("gpu_ms".into(), round(g, 4).into());
        }
        if let Some(g) = self.gpu_gflops {
            o.insert("gpu_gflops".into(), round(g, 3).into());
        }
        if let Some(g) = self.gpu_gbps {
            o.insert("gpu_gbps".into(), round(g, 3).into());
        }
        if let Some(p) = self.peak_bytes {
            o.insert("peak_bytes".into(), p.into());
        }
        if let Some(p) = self.step_bytes {
            o.insert("step_bytes".into(), p.into());
        }
        o.insert("dispatches".into(), self.dispatches.into());
        o.insert("runs_ms".into(), self.runs_ms.iter().map(|&t| Value::from(round(t, 3))).collect());
        o.insert("check_error".into(), Value::from(self.check_error));
        o.insert("checked".into(), self.checked.clone().into());
        if let Some(n) = &self.note {
            o.insert("note".into(), n.clone().into());
        }
        Value::Object(o).to_string()
    }

    /// One row of the human-readable table (see [`TABLE_HEADER`]).
    pub fn to_row(&self) -> String {
        let rate = match (self.gflops, self.gbps) {
            (Some(g), _) => format!("{g:.2} GFLOP/s"),
            (_, Some(g)) => format!("{g:.2} GB/s"),
            _ => String::new(),
        };
        let mib = |b: Option<u64>| b.map_or(String::new(), |b| format!("{:.1}", b as f64 / (1u64 << 20) as f64));
        let gpu_ms = self.gpu_ms.map_or(String::new(), |g| format!("{g:.3}"));
        format!(
            "{:<32} {:>10.2} {:>9} {:>15} {:>10} {:>10} {:>6} {:>9.1e}",
            self.name,
            self.ms,
            gpu_ms,
            rate,
            mib(self.peak_bytes),
            mib(self.step_bytes),
            self.dispatches,
            self.check_error
        )
    }
}

/// Column titles of [`Report::to_row`].
pub const TABLE_HEADER: &str =
    "workload                                 ms    gpu ms      throughput   peak MiB   step MiB  disp.  check err";

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The times of one workload.
pub(crate) struct Timing {
    /// Median of `runs`, ms.
    pub median: f64,
    /// Every timed run's wall time, ms.
    pub runs: Vec<f64>,
    /// Median device time between GPU timestamps, ms, where the device has them.
    pub gpu_median: Option<f64>,
    /// Kernel dispatches of one run.
    pub dispatches: u64,
}

impl Timing {
    /// `amount` per second by the wall time and by the device time (GFLOP per second from
    /// the GFLOP of one run, say).
    pub fn rates(&self, amount: f64) -> (Option<f64>, Option<f64>) {
        (Some(amount / (self.median * 1e-3)), self.gpu_median.map(|g| amount / (g * 1e-3)))
    }
}

/// `repeats` runs of `run` after `warmup` untimed ones, each ended by [`Gpu::sync`] inside
/// the wall-clock region and, where the device has them, between GPU timestamps.
pub(crate) fn time(gpu: &Gpu, warmup: usize, repeats: usize, mut run: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        run()?;
        gpu.sync()?;
    }
    if warmup > 0 && gpu.profiling() {
        // The profile covers the timed runs: the check and warm-up include building the
        // pipelines (seconds of shader compilation on a cold cache).
        gpu.take_profile();
    }
    let timer = gpu.timer();
    let before = gpu.dispatch_count();
    let (mut walls, mut device) = (Vec::new(), Vec::new());
    for v in [&mut walls, &mut device] {
        v.try_reserve_exact(repeats)
            .map_err(|_| Error::invalid("repeats", format!("{repeats} timed runs are more than memory can list")))?;
    }
    for _ in 0..repeats {
        let start = Instant::now();
        if let Some(t) = &timer {
            t.start(gpu)?;
        }
        run()?;
        if let Some(t) = &timer {
            t.stop(gpu)?;
        }
        gpu.sync()?;
        walls.push(start.elapsed().as_secs_f64() * 1e3);
        if let Some(t) = &timer {
            device.push(t.elapsed_ms(gpu)?);
        }
    }
    let dispatches = (gpu.dispatch_count() - before) / repeats.max(1) as u64;
    let gpu_median = timer.is_some().then(|| median(&device));
    Ok(Timing { median: median(&walls), runs: walls, gpu_median, dispatches })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Largest `|got − want| / max(|want|_∞, floor)` over two vectors: the error relative to the
/// result's scale.
pub(crate) fn rel_error(got: &[f32], want: &[f64], floor: f64) -> f64 {
    let scale = want.iter().fold(floor, |m, w| m.max(w.abs()));
    got.iter().zip(want).fold(0.0f64, |m, (&g, w)| {
        let e = (f64::from(g) - w).abs() / scale;
        if e.is_nan() { f64::INFINITY } else { m.max(e) }
    })
}

/// Fails the workload `name` when the check's error exceeds `tolerance`.
pub(crate) fn ensure_close(name: &str, what: &str, error: f64, tolerance: f64) -> Result<()> {
    if error <= tolerance {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("bench {name}"),
            format!("{what} differs from the CPU twin: relative error {error:.3e} above {tolerance:.1e}"),
        ))
    }
}

/// The workload names, in the order they run.
pub const WORKLOADS: [&str; 6] = [
    "matmul_1024",
    "spectral_filter_64x14x14x768",
    "vitb_block_lora_train_step_b8",
    "vitb_block_moppa_train_step_b8",
    "vitb_block_full_train_step_b8",
    "tiny_vit_train_step_b64",
];

/// Fails, naming `what`, when `filter` is part of no workload's name.
fn check_filter(what: &str, filter: Option<&str>) -> Result<()> {
    match filter {
        Some(f) if !WORKLOADS.iter().any(|w| w.contains(f)) => {
            Err(Error::invalid(what, format!("`{f}` is part of no workload's name ({})", WORKLOADS.join(", "))))
        }
        _ => Ok(()),
    }
}

/// Runs every workload `options` selects on `gpu`, handing each report to `on_report` as it
/// is measured.
pub fn run(gpu: &Gpu, options: &BenchOptions, on_report: &mut dyn FnMut(&Report)) -> Result<Vec<Report>> {
    check_filter("bench filter", options.filter.as_deref())?;
    let mut reports = Vec::new();
    for name in WORKLOADS {
        if options.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let report = match name {
            "matmul_1024" => kernels::matmul_1024(gpu, options)?,
            "spectral_filter_64x14x14x768" => kernels::spectral_filter(gpu, options)?,
            "vitb_block_lora_train_step_b8" => layer::vitb_block(gpu, options, LayerTraining::Lora)?,
            "vitb_block_moppa_train_step_b8" => layer::vitb_block(gpu, options, LayerTraining::Moppa)?,
            "vitb_block_full_train_step_b8" => layer::vitb_block(gpu, options, LayerTraining::Full)?,
            _ => layer::tiny_vit_step(gpu, options)?,
        };
        gpu.trim_pool();
        on_report(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Time per kernel of one workload's timed runs (with no warm-up, of all its runs), on stderr.
fn print_profile(name: &str, profile: &[crate::gpu::KernelTime]) {
    let total: f64 = profile.iter().map(|k| k.seconds).sum();
    let kernels = if profile.len() == 1 { "kernel" } else { "kernels" };
    note!("# profile of {name}: {total:.3} s in {} {kernels} (the timed runs)", profile.len());
    for k in profile {
        note!(
            "#   {:<28} {:>7} dispatches {:>10.3} s {:>6.1}%",
            k.entry,
            k.dispatches,
            k.seconds,
            100.0 * k.seconds / total.max(f64::MIN_POSITIVE)
        );
    }
}

/// `peft-wgpu bench`: opens the GPU, runs every workload and prints a table (or, with
/// `json`, one JSON object per line) on stdout as the workloads finish.
pub fn run_cli(json: bool) -> Result<()> {
    use std::io::Write;
    let gpu = Gpu::new()?;
    let options = BenchOptions::from_env()?;
    let info = gpu.adapter_info();
    let mut out = std::io::stdout().lock();
    let io_err = |e: std::io::Error| Error::Io { path: "<stdout>".into(), source: e };
    if !json {
        writeln!(out, "# {} ({:?}, {})", info.name, info.backend, info.driver_info).map_err(io_err)?;
        let device = if gpu.timer().is_some() { "; gpu ms: between GPU timestamps" } else { "" };
        writeln!(out, "# ms: median wall time of a run, device synchronised{device}").map_err(io_err)?;
        writeln!(out, "{TABLE_HEADER}").map_err(io_err)?;
    }
    let profile = crate::io::env_var("PEFT_WGPU_PROFILE")?.is_some_and(|v| !v.is_empty() && v != "0");
    gpu.set_profiling(profile);
    let mut failed = None;
    run(&gpu, &options, &mut |r| {
        let line = if json { r.to_json() } else { r.to_row() };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            failed.get_or_insert(e);
        }
        if profile {
            print_profile(&r.name, &gpu.take_profile());
        }
    })?;
    match failed {
        Some(e) => Err(io_err(e)),
        None => Ok(()),
    }
}
