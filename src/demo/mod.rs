//! The embedded demo (`peft-wgpu demo`): no arguments, no downloads.
//!
//! A small ViT pretrained by this crate on handwritten digits 0–4 ([`model`], weights in
//! `data/digits_vit/`) is fine-tuned on digits 5–9 (relabelled 0–4) with MoPPA, FLoRA,
//! LoRA, RLP and a head-only baseline ([`methods`]). Every method gets a fresh head and the
//! same steps, batch size, batch order and seed; learning rates are per method
//! ([`Method::lr`]). [`run`] returns a [`DemoReport`] whose `Display` is the table
//! (method, trainable parameters, held-out accuracy, ms per step) and writes the loss curves
//! as an SVG. The digits ([`digits`]) and the model are embedded in the binary.

pub mod digits;
pub mod methods;
pub mod model;
mod svg;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub use methods::Method;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use digits::{Part, Task};
use model::FitOptions;

/// Writes the demo's fine-tuning task into `dir` as files for the command line: digits 5–9
/// (labelled 0–4) as `train.safetensors` and `test.safetensors` in the data format of
/// `--data`, and each adapter method's config as `<method>.json` (`lora.json`, …). Returns
/// every file written with a line saying what it holds.
pub fn write_task_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for (part, name) in [(Part::Train, "train.safetensors"), (Part::HeldOut, "test.safetensors")] {
        let data = digits::split(Task::FineTune, part)?;
        let path = dir.join(name);
        data.save(&path)?;
        written.push((path, format!("{} images of digits 5-9, labels 0-4", data.len())));
    }
    for method in Method::ALL {
        let Some(config) = method.adapter_config() else { continue };
        let path = dir.join(format!("{}.json", method.name().to_lowercase()));
        // Laid out as a person would write it, one field per line.
        let value: serde_json::Value =
            serde_json::from_str(config).map_err(|e| Error::invalid("demo config", e.to_string()))?;
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| Error::invalid("demo config", e.to_string()))? + "\n";
        crate::io::atomic::write(&path, text.as_bytes())?;
        written.push((path, format!("the demo's {}; its learning rate: {}", method.name(), method.lr())));
    }
    Ok(written)
}

/// Settings of the demo. The default is the full demo; tests use fewer steps and images.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Fine-tuning steps of every method.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of the adapters' initialisation and of the batch order.
    pub seed: u64,
    /// Evaluate on only the first this many held-out images (all when `None`).
    pub held_out: Option<usize>,
    /// Where to write the SVG of the loss curves (`None`: no file).
    pub svg: Option<PathBuf>,
    /// Progress on stderr: a line per method (and a bar while it trains, where stderr is a
    /// terminal).
    pub progress: bool,
}

impl Default for DemoOptions {
    /// 600 steps of 16 images, seed 0, every held-out image, `demo_loss.svg` in the current
    /// directory, progress when stderr is a terminal.
    fn default() -> Self {
        DemoOptions {
            steps: 600,
            batch_size: 16,
            seed: 0,
            held_out: None,
            svg: Some(PathBuf::from("demo_loss.svg")),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// One row of the demo's table.
#[derive(Clone, Debug)]
pub struct MethodRow {
    /// The method.
    pub method: Method,
    /// Its learning rate.
    pub lr: f64,
    /// Trainable values: the adapter's tensors and the head.
    pub trainable: usize,
    /// Accuracy on the held-out digits 5–9.
    pub accuracy: f64,
    /// Median wall time of a training step, in milliseconds.
    pub ms_per_step: f64,
    /// Training loss of every step.
    pub losses: Vec<f32>,
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// One row per method, in [`Method::ALL`]'s order.
    pub rows: Vec<MethodRow>,
    /// Held-out accuracy of the pretrained model on digits 0–4.
    pub pretrained_accuracy: f64,
    /// The settings it ran with.
    pub options: DemoOptions,
    /// Training images of digits 5–9.
    pub train_images: usize,
    /// Held-out images of digits 5–9 evaluated.
    pub held_out_images: usize,
    /// The GPU it ran on.
    pub device: String,
}

/// The most fine-tuning steps a demo run takes (about 10 hours on lavapipe).
pub const MAX_STEPS: usize = 1_000_000;

/// Runs the demo: evaluates the pretrained model, fine-tunes with every method, writes the
/// SVG (if asked) and returns the table.
pub fn run(options: &DemoOptions) -> Result<DemoReport> {
    if !(1..=MAX_STEPS).contains(&options.steps) {
        return Err(Error::invalid(
            "--steps",
            format!("must be between 1 and {MAX_STEPS} (the demo keeps every step's loss), got {}", options.steps),
        ));
    }
    if options.batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    if options.held_out == Some(0) {
        return Err(Error::invalid("held-out images", "must be at least 1"));
    }
    if let Some(path) = &options.svg {
        crate::io::paths::check_output_file(path, "--svg", crate::io::paths::Replaces::Svg)?; // before minutes of training
    }
    let base = model::pretrained()?;
    let train_set = digits::split(Task::FineTune, Part::Train)?;
    let held_out = digits::take(digits::split(Task::FineTune, Part::HeldOut)?, options.held_out)?;
    let pretrain_held_out = digits::take(digits::split(Task::Pretrain, Part::HeldOut)?, options.held_out)?;
    let gpu = Gpu::new()?;
    let device = format!("{} ({:?})", gpu.adapter_info().name, gpu.adapter_info().backend);
    let pretrained_accuracy = methods::accuracy(&gpu, &base, &pretrain_held_out)?;
    if options.progress {
        note!("peft-wgpu demo on {device}: pretrained ViT, {:.1}% on held-out digits 0–4", 100.0 * pretrained_accuracy);
    }
    let mut rows = Vec::new();
    for method in Method::ALL {
        let fit = FitOptions {
            steps: options.steps,
            batch_size: options.batch_size,
            lr: method.lr(),
            seed: options.seed,
            cosine: false,
        };
        let started = std::time::Instant::now();
        let bar = if options.progress {
            let style = indicatif::ProgressStyle::with_template("  {prefix:<10} {bar:20} {pos}/{len}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(options.steps as u64).with_style(style).with_prefix(method.name())
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut show = |step: usize, loss: f32| {
            let rate = ((step + 1) * options.batch_size) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(step as u64 + 1);
            bar.set_message(format!("loss {loss:.4}  {rate:.0} img/s"));
        };
        let o = methods::fine_tune(&gpu, &base, method, &train_set, &held_out, fit, &mut show)?;
        bar.finish_and_clear();
        if options.progress {
            note!("  {:<10} done: held-out accuracy {:.1}%", method.name(), 100.0 * o.accuracy);
        }
        rows.push(MethodRow {
            method,
            lr: method.lr(),
            trainable: o.trainable,
            accuracy: o.accuracy,
            ms_per_step: o.ms_per_step,
            losses: o.losses,
        });
    }
    if let Some(path) = &options.svg {
        let series: Vec<(&str, &[f32])> = rows.iter().map(|r| (r.method.name(), r.losses.as_slice())).collect();
        let title = "Fine-tuning a digits-0–4 ViT on digits 5–9";
        crate::io::atomic::write_output(path, svg::loss_plot(title, &series).as_bytes())?;
    }
    Ok(DemoReport {
        rows,
        pretrained_accuracy,
        options: options.clone(),
        train_images: train_set.len(),
        held_out_images: held_out.len(),
        device,
    })
}

impl DemoReport {
    /// The row of `method`.
    pub fn row(&self, method: Method) -> Option<&MethodRow> {
        self.rows.iter().find(|r| r.method == method)
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "Pretrained ViT (this crate, digits 0–4): {:.1}% on held-out digits 0–4.",
            100.0 * self.pretrained_accuracy
        )?;
        writeln!(
            f,
            "Fine-tuned on digits 5–9: {} training images, {} step{} of {} (AdamW, seed {}), fresh 5-label head each;",
            self.train_images,
            o.steps,
            if o.steps == 1 { "" } else { "s" },
            o.batch_size,
            o.seed
        )?;
        writeln!(f, "accuracy on {} held-out images; on {}.", self.held_out_images, self.device)?;
        writeln!(f)?;
        writeln!(f, "{:<10} {:>9} {:>9} {:>9} {:>8}", "method", "trainable", "accuracy", "ms/step", "lr")?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<10} {:>9} {:>8.1}% {:>9.1} {:>8}",
                r.method.name(),
                r.trainable,
                100.0 * r.accuracy,
                r.ms_per_step,
                format!("{:.0e}", r.lr)
            )?;
        }
        writeln!(f, "\nlr: per method, chosen on a fifth of the training images kept back for validation.")?;
        match &o.svg {
            Some(path) => writeln!(f, "Loss curves written to {}", path.display()),
            None => Ok(()),
        }
    }
}
