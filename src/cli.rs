//! The commands behind the `peft-wgpu` binary (SPEC §11), as library functions: every input
//! is read and validated before the GPU is opened, and outputs are written atomically.

use std::path::{Path, PathBuf};

use crate::adapters::{Adapter, AdapterConfig, CONFIG_FILE, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::safetensors::{self as st, HostTensor};
use crate::nn::{Vit, VitWeights};
use crate::optim::OptimizerKind;
use crate::train::{BatchOrder, EvalReport, StepReport, TrainOptions, evaluate, train as train_loop};

/// Everything `peft-wgpu train` takes.
#[derive(Clone, Debug)]
pub struct TrainArgs {
    /// Model folder.
    pub model: PathBuf,
    /// `adapter_config.json` (optional with `init`).
    pub adapter_config: Option<PathBuf>,
    /// Training data.
    pub data: PathBuf,
    /// Output adapter folder.
    pub out: PathBuf,
    /// Adapter folder to start from.
    pub init: Option<PathBuf>,
    /// Optimizer steps.
    pub steps: Option<usize>,
    /// Passes over the data (when `steps` is not given; default 1).
    pub epochs: Option<usize>,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
    /// Seeded shuffle (else rows `(t·B + j) mod N`).
    pub shuffle: bool,
    /// Data to evaluate on after training.
    pub eval_data: Option<PathBuf>,
    /// Overwrite an adapter already in `out`.
    pub force: bool,
}

/// Whether `dir` already holds an adapter.
pub fn holds_adapter(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(WEIGHTS_FILE).exists()
}

/// What a caller of [`train`] hears about the run.
pub trait Progress {
    /// Training is about to start: PEFT's trainable-parameter line and the step count.
    fn started(&mut self, _summary: &str, _steps: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Steps run.
    pub steps: usize,
    /// Loss of the last step.
    pub final_loss: f32,
    /// PEFT's trainable-parameter line.
    pub summary: String,
    /// Results on `--eval-data`, when given.
    pub eval: Option<EvalReport>,
}

/// `peft-wgpu train`: validates everything, trains, saves the adapter, optionally evaluates.
pub fn train(args: &TrainArgs, progress: &mut dyn Progress) -> Result<TrainOutcome> {
    if args.batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    if args.steps == Some(0) || args.epochs == Some(0) {
        return Err(Error::invalid(if args.steps.is_some() { "--steps" } else { "--epochs" }, "must be at least 1"));
    }
    if !args.lr.is_finite() || args.lr <= 0.0 {
        return Err(Error::invalid("--lr", format!("must be a positive number, got {}", args.lr)));
    }
    if holds_adapter(&args.out) && !args.force {
        return Err(Error::invalid(
            "--out",
            format!("{} already holds an adapter; pass --force to overwrite it", args.out.display()),
        ));
    }
    if args.out.exists() && !args.out.is_dir() {
        return Err(Error::invalid("--out", format!("{} exists and is not a folder", args.out.display())));
    }
    let (config, config_path) = match (&args.adapter_config, &args.init) {
        (Some(path), _) => (AdapterConfig::read(path)?, path.clone()),
        (None, Some(init)) => {
            let path = init.join(CONFIG_FILE);
            (AdapterConfig::read(&path)?, path)
        }
        (None, None) => {
            return Err(Error::invalid("--adapter-config", "is required (or --init with an adapter folder)"));
        }
    };
    let weights = VitWeights::load(&args.model)?;
    let data = Dataset::load(&args.data)?;
    let eval_data = args.eval_data.as_deref().map(Dataset::load).transpose()?;
    let steps = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, e) => (e.unwrap_or(1) * data.len()).div_ceil(args.batch_size),
    };
    let gpu = Gpu::new()?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    let adapter = match &args.init {
        Some(init) => Adapter::load_tensors(&gpu, config, &config_path, &init.join(WEIGHTS_FILE), &vit)?,
        None => Adapter::new(&gpu, config, &config_path, &vit, args.seed)?,
    };
    let summary = adapter.trainable_summary();
    progress.started(&summary, steps);
    let order = if args.shuffle { BatchOrder::Shuffled { seed: args.seed } } else { BatchOrder::Sequential };
    let options = TrainOptions {
        steps,
        batch_size: args.batch_size,
        lr: args.lr,
        optimizer: args.optimizer,
        order,
        seed: args.seed,
    };
    let mut last = f32::NAN;
    train_loop(&gpu, &vit, &adapter, &data, &options, &mut |r| {
        last = r.loss;
        progress.step(r);
    })?;
    adapter.save(&gpu, &args.out)?;
    let eval = eval_data.as_ref().map(|d| evaluate(&gpu, &vit, Some(&adapter), d, args.batch_size)).transpose()?;
    Ok(TrainOutcome { steps, final_loss: last, summary, eval })
}

/// `peft-wgpu eval`: accuracy and mean loss; optionally writes the logits.
pub fn eval(
    model: &Path,
    adapter: Option<&Path>,
    data: &Path,
    batch_size: usize,
    logits_out: Option<&Path>,
) -> Result<EvalReport> {
    if batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    let weights = VitWeights::load(model)?;
    let data = Dataset::load(data)?;
    let gpu = Gpu::new()?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    let adapter = adapter.map(|dir| Adapter::load(&gpu, dir, &vit)).transpose()?;
    let report = evaluate(&gpu, &vit, adapter.as_ref(), &data, batch_size)?;
    if let Some(path) = logits_out {
        let t = HostTensor::new(vec![data.len(), report.labels], report.logits.clone())?;
        st::write(path, &[("logits".to_string(), &t)], None)?;
    }
    Ok(report)
}

/// `peft-wgpu merge`: writes a model folder with the adapter folded in.
pub fn merge(model: &Path, adapter: &Path, out: &Path) -> Result<()> {
    let weights = VitWeights::load(model)?;
    let gpu = Gpu::new()?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    let adapter = Adapter::load(&gpu, adapter, &vit)?;
    let merged = adapter.merge(&gpu, &weights)?;
    merged.save(out)
}
