//! `peft-wgpu train`: every input checked on the host, then the run, the save and the
//! optional evaluation.

use std::path::{Path, PathBuf};

use super::checks::{
    Blame, at_least_one, check_logits, check_optimizer, check_rows, fitting_batch, non_finite_logits,
    refuse_one_stream_twice, refuse_overwriting_inputs, refuse_special_outputs, same_place,
};
use super::inputs::{
    AdapterInput, read_data, read_model_for_loss, refuse_headless, refuse_merged_twice, refuse_other_type, tokens,
};
use super::{Progress, holds_adapter, holds_model, prompts_note};
use crate::adapters::{Adapter, AdapterConfig, CONFIG_FILE, PEFT_PREFIX, PeftType, WEIGHTS_FILE, check_adapter_folder};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::json::JsonFile;
use crate::io::paths::{check_output_dir, expect_file};
use crate::nn::{Naming, Vit, VitConfig, VitWeights};
use crate::optim::OptimizerKind;
use crate::train::{
    BatchOrder, EvalReport, TrainOptions, evaluate, evaluate_with_progress, first_non_finite_image, rows_of_step,
    train as train_loop,
};

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
    pub epochs: Option<f64>,
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

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Steps run.
    pub steps: usize,
    /// Loss of the last step.
    pub final_loss: f32,
    /// PEFT's trainable-parameter line.
    pub summary: String,
    /// Accuracy and loss on `--eval-data`, when given (without the logits).
    pub eval: Option<EvalReport>,
}

/// `peft-wgpu train`: validates everything, trains, saves the adapter, optionally evaluates.
pub fn train(args: &TrainArgs, progress: &mut dyn Progress) -> Result<TrainOutcome> {
    let lora_naming = lora_naming_from_env()?;
    check_numbers(args)?;
    check_outputs(args)?;
    let weights = read_model_for_loss(&args.model)?;
    let model = &weights.config;
    let adapter = read_adapter(args, model)?;
    refuse_merged_twice(&weights, &args.model, &adapter, "--init", "train on the base model")?;
    refuse_headless(&weights, &args.model, Some(&adapter))?;
    if adapter.labels < 2 {
        let from = adapter.labels_config(&args.model, model);
        let message = format!("is 1: {}", crate::train::ONE_LABEL);
        return Err(Error::Config { path: from, key: "num_labels".into(), message });
    }
    let data = read_data(&args.data, "--data", model, adapter.labels)?;
    let eval_data =
        args.eval_data.as_deref().map(|p| read_data(p, "--eval-data", model, adapter.labels)).transpose()?;
    let steps = step_count(args, data.len())?;
    let tokens = tokens(&weights, Some(&adapter))?;
    // A batch larger than the device takes at once is computed in pieces whose gradients are
    // summed; only one image must fit, and the list of the step's rows in memory.
    check_rows(args.batch_size)?;
    fitting_batch(model, (tokens, adapter.labels), data.shape, args.batch_size, None)?;

    let gpu = Gpu::new()?;
    let at_once = fitting_batch(model, (tokens, adapter.labels), data.shape, args.batch_size, Some(&gpu))?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    let mut adapter = adapter;
    name_base_model(&mut adapter.config, &args.model);
    // The file a non-finite start is blamed on: the weights started from, or the config.
    let start_file = adapter.source_file();
    let mut adapter = adapter.build(&gpu, &vit, args.seed)?;
    match lora_naming {
        Some(naming) => adapter.set_lora_naming(naming),
        None => note_lora_naming(&adapter, &args.model),
    }
    let adapter = adapter;
    // The eval data is run once before training too, with the adapter as it starts: images
    // whose logits are not finite (pixels too large for the model's f32 arithmetic) are
    // refused before anything is trained or written, as those of --data are at step 0.
    if let Some(d) = &eval_data {
        let report = evaluate(&gpu, &vit, Some(&adapter), d, args.batch_size.min(d.len()).min(at_once))?;
        let blame = Blame { gpu: &gpu, vit: &vit, model: &args.model, adapter: Some((&adapter, &start_file)) };
        check_logits(&report, d, &blame)?;
    }
    let summary = adapter.trainable_summary();
    progress.started(&start_lines(args, &summary, (&data, &weights), at_once), steps);
    let order = if args.shuffle { BatchOrder::Shuffled { seed: args.seed } } else { BatchOrder::Sequential };
    let options = TrainOptions {
        steps,
        batch_size: args.batch_size,
        lr: args.lr,
        optimizer: args.optimizer,
        order,
        seed: args.seed,
        micro_batch: Some(at_once),
    };
    let mut last = f32::NAN;
    let mut planned = at_once;
    let trained = train_loop(&gpu, &vit, &adapter, &data, &options, &mut |r| {
        last = r.loss;
        // The device refused the pieces planned (a grid past its workgroups per axis, which
        // the estimate does not see): say what the steps now do.
        if r.at_once < planned {
            progress.note(&format!(
                "note: the device refused {planned} images at once; {}",
                pieces_text(r.images, r.at_once)
            ));
            planned = r.at_once;
        }
        progress.step(r);
    });
    let run = Blame { gpu: &gpu, vit: &vit, model: &args.model, adapter: Some((&adapter, &start_file)) };
    trained.map_err(|e| blame_non_finite(e, &run, &data, &options))?;
    // Checked again under the folder's lock, as the save starts: another run may have saved
    // an adapter there while this one trained.
    adapter.save_checked(&gpu, &args.out, || refuse_filled_meanwhile(args))?;
    let saved =
        |e: Error| Error::After { done: format!("adapter saved to {}", args.out.display()), source: Box::new(e) };
    progress.saved(steps, last, &args.out).map_err(saved)?;
    let eval = match &eval_data {
        Some(d) => {
            let batch = args.batch_size.min(d.len()).min(at_once);
            let report = evaluate_with_progress(&gpu, &vit, Some(&adapter), d, batch, false, &mut |i, n| {
                progress.evaluated(i, n);
            })
            .map_err(saved)?;
            let weights = args.out.join(WEIGHTS_FILE);
            let blame = Blame { gpu: &gpu, vit: &vit, model: &args.model, adapter: Some((&adapter, &weights)) };
            check_logits(&report, d, &blame).map_err(saved)?;
            Some(report)
        }
        None => None,
    };
    Ok(TrainOutcome { steps, final_loss: last, summary, eval })
}

/// Fails naming the flag whose number no run can use.
fn check_numbers(args: &TrainArgs) -> Result<()> {
    at_least_one("--batch-size", Some(args.batch_size))?;
    at_least_one("--steps", args.steps)?;
    if let Some(e) = args.epochs
        && !(e.is_finite() && e > 0.0)
    {
        return Err(Error::invalid("--epochs", format!("must be a positive number, got {e}")));
    }
    check_optimizer(args.lr, &args.optimizer)
}

/// Fails when `--out` cannot take the adapter: a model folder, an adapter without `--force`,
/// a folder that cannot be written, or files there that are this run's own inputs.
fn check_outputs(args: &TrainArgs) -> Result<()> {
    if holds_model(&args.out) {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} holds a model (config.json or model.safetensors); an adapter saved beside it would be applied \
                 whenever transformers loads that folder; choose another folder",
                args.out.display()
            ),
        ));
    }
    if holds_adapter(&args.out) && !args.force {
        return Err(Error::invalid(
            "--out",
            format!("{} already holds an adapter; pass --force to overwrite it", args.out.display()),
        ));
    }
    check_output_dir(&args.out, "--out")?;
    refuse_special_outputs(&args.out, &[CONFIG_FILE, WEIGHTS_FILE])?;
    // `--force` replaces an adapter, never the data this run reads.
    let eval_data = args.eval_data.as_deref().map(|p| ("--eval-data", p));
    let data_files: Vec<(&str, &Path)> = std::iter::once(("--data", args.data.as_path())).chain(eval_data).collect();
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        refuse_overwriting_inputs(&args.out.join(name), "--out", &data_files)?;
    }
    if let Some(eval) = &args.eval_data {
        refuse_one_stream_twice(("--data", &args.data), ("--eval-data", eval))?;
    }
    if let Some(config) = &args.adapter_config {
        for (flag, input) in [("--data", Some(&args.data)), ("--eval-data", args.eval_data.as_ref())] {
            if let Some(input) = input {
                refuse_one_stream_twice(("--adapter-config", config), (flag, input))?;
            }
        }
    }
    Ok(())
}

/// The adapter to train: a fresh one from `--adapter-config` (started from `--init`'s
/// weights when both are given), or the `--init` folder's.
fn read_adapter(args: &TrainArgs, model: &VitConfig) -> Result<AdapterInput> {
    let (path, init) = match (&args.adapter_config, &args.init) {
        (Some(path), init) => (path, init),
        (None, Some(init)) => return AdapterInput::folder(init, "--init", model),
        (None, None) => {
            return Err(Error::invalid("--adapter-config", "is required (or --init with an adapter folder)"));
        }
    };
    if path.join(CONFIG_FILE).is_file() {
        let message = format!(
            "is a folder, expected an adapter_config.json for --adapter-config (its own is {}; to start from the \
             adapter in it, pass the folder as --init)",
            path.join(CONFIG_FILE).display()
        );
        return Err(Error::Format { path: path.clone(), message });
    }
    expect_file(path, "an adapter_config.json for --adapter-config")?;
    if let Some(dir) = init {
        check_adapter_folder(dir, "an adapter folder for --init", WEIGHTS_FILE)?;
    }
    let config = AdapterConfig::read(path)?;
    if let Some(dir) = init {
        refuse_other_type(config.peft_type(), path, dir)?;
    }
    let weights = init.as_ref().map(|d| d.join(WEIGHTS_FILE));
    AdapterInput::new(config, path, weights.as_deref(), model)
}

/// `ceil(E·N/B)` steps for `--epochs E` (default 1) over `images` images, at least one, or
/// `--steps` as given.
fn step_count(args: &TrainArgs, images: usize) -> Result<usize> {
    if let Some(steps) = args.steps {
        return Ok(steps);
    }
    let epochs = args.epochs.unwrap_or(1.0);
    let covered = epochs * images as f64;
    if covered > (1u64 << 50) as f64 {
        return Err(Error::invalid(
            "--epochs",
            // 1.79e308 rather than its 309 digits.
            format!("{epochs:e} passes over {images} images is too many steps"),
        ));
    }
    // E·N images, rounded where the product is a whole number but for f64's error
    // (1.1 × 100 is 110.00000000000001), then full batches.
    let whole = covered.round();
    let covered = if (covered - whole).abs() <= 1e-9 * whole.max(1.0) { whole } else { covered.ceil() };
    Ok((covered as usize).div_ceil(args.batch_size).max(1))
}

/// Records `--model` as the adapter's `base_model_name_or_path`, saying so when the config
/// named another model (the same folder spelled otherwise keeps the config's spelling).
fn name_base_model(config: &mut AdapterConfig, model: &Path) {
    let model_name = model.to_string_lossy();
    if model.to_str().is_none() {
        note!(
            "note: the --model path is not valid UTF-8, which a JSON config cannot hold; it is saved as \
             base_model_name_or_path `{model_name}`, with � for the bytes that are not"
        );
    }
    let Some(other) = config.set_base_model(&model_name) else { return };
    if same_place(Path::new(&other), model) {
        config.set_base_model(&other);
    } else {
        let shown: String = other.chars().take(120).collect();
        let cut = if shown.len() < other.len() { "…" } else { "" };
        note!(
            "note: the adapter config names `{shown}{cut}` as its base model; it is saved naming --model, \
             `{model_name}`"
        );
    }
}

/// What the run says as it starts: PEFT's trainable-parameter line and notes on batches that
/// repeat images or go in pieces, and on merged prompt tokens in the model.
fn start_lines(args: &TrainArgs, summary: &str, (data, weights): (&Dataset, &VitWeights), at_once: usize) -> String {
    let mut lines = summary.to_string();
    if args.batch_size > data.len() {
        lines += &format!(
            "\nnote: --batch-size {} is more than the {} images of --data, so each batch repeats images",
            args.batch_size,
            data.len()
        );
    }
    if let Some(p) = &weights.prompts {
        lines += &format!("\n{}", prompts_note(p.shape[0]));
    }
    if at_once < args.batch_size {
        lines += &format!("\n{}", pieces_note(args.batch_size, at_once));
    }
    lines
}

/// A non-finite loss blamed on the image and file at fault where one is found; any other
/// error as it is. Before any update a non-finite loss comes from the inputs (the data, or
/// the adapter started from); after updates it is a divergence, unless the model alone cannot
/// compute an image of that step's batch: then the data is at fault, whatever the updates.
fn blame_non_finite(error: Error, run: &Blame<'_>, data: &Dataset, options: &TrainOptions) -> Error {
    let step = match &error {
        Error::NonFiniteLoss { step, .. } => *step,
        _ => return error,
    };
    let blame = Blame { adapter: run.adapter.filter(|_| step == 0), ..*run };
    let adapter = blame.adapter.map(|(a, _)| a);
    let found = rows_of_step(options, data.len(), step)
        .and_then(|rows| first_non_finite_image(run.gpu, run.vit, adapter, data, &rows));
    match found {
        Ok(Some(found)) => non_finite_logits(&blame, data, found),
        _ => error,
    }
}

/// Fails when `--out` received a model, or an adapter without `--force`, from another run
/// while this one trained.
fn refuse_filled_meanwhile(args: &TrainArgs) -> Result<()> {
    if holds_model(&args.out) {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} received a model (config.json or model.safetensors) from another run while this one trained; \
                 an adapter saved beside it would be applied whenever transformers loads that folder, so nothing \
                 was saved; choose another folder",
                args.out.display()
            ),
        ));
    }
    if holds_adapter(&args.out) && !args.force {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} received an adapter from another run while this one trained; nothing was saved (pass --force \
                 to overwrite it, or choose another folder)",
                args.out.display()
            ),
        ));
    }
    Ok(())
}

/// The environment variable that chooses the module naming `train` saves LoRA keys in:
/// `transformers5` (PEFT ≥ 0.18 under transformers 5) or `transformers4` (the on-disk
/// naming, which PEFT 0.17 and older under transformers 4 read); see
/// [`crate::adapters::Adapter::lora_naming`] for the choice made without it.
pub const LORA_NAMING_ENV: &str = "PEFT_WGPU_LORA_NAMING";

fn lora_naming_from_env() -> Result<Option<Naming>> {
    let Some(value) = std::env::var_os(LORA_NAMING_ENV) else { return Ok(None) };
    match value.to_str().map(str::trim) {
        Some("") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("transformers5") => Ok(Some(Naming::Transformers5)),
        Some(v) if v.eq_ignore_ascii_case("transformers4") => Ok(Some(Naming::OnDisk)),
        _ => Err(Error::invalid(
            LORA_NAMING_ENV,
            format!("is {value:?}; use transformers5 (PEFT 0.18 and later) or transformers4 (PEFT 0.17 and older)"),
        )),
    }
}

/// Says, when a LoRA adapter is about to be saved in transformers 5's naming for a model
/// whose `config.json` transformers 4 wrote, that PEFT under transformers 4 will not read it
/// and how to save it in the naming that one reads.
fn note_lora_naming(adapter: &Adapter, model: &Path) {
    // Keys outside the layers (`classifier`, the patch embedding) are the same in both.
    let layer_keys =
        adapter.trainable().iter().any(|p| p.key.strip_prefix(PEFT_PREFIX).and_then(Naming::of_path).is_some());
    if adapter.config().peft_type() != PeftType::Lora || adapter.lora_naming() != Naming::Transformers5 || !layer_keys {
        return;
    }
    let version = JsonFile::read(&model.join("config.json"))
        .ok()
        .and_then(|j| j.opt_string("transformers_version").ok().flatten());
    let Some(version) =
        version.filter(|v| v.split('.').next().and_then(|m| m.trim().parse::<u32>().ok()).is_some_and(|m| m < 5))
    else {
        return;
    };
    note!(
        "note: the LoRA keys are saved in transformers 5's module naming (`vit.layers.N.attention.q_proj`), which PEFT \
         0.18 and later read under transformers 5; the model's config.json comes from transformers {version}, \
         whose PEFT (0.17 and older) reads only the on-disk naming: set {LORA_NAMING_ENV}=transformers4 to save \
         in that one"
    );
}

/// What to tell the user about a batch of `batch` images computed `at_once` images at a time.
fn pieces_note(batch: usize, at_once: usize) -> String {
    format!("note: --batch-size {batch} is more images than this device takes at once; {}", pieces_text(batch, at_once))
}

/// How a step of `batch` images goes in pieces of at most `at_once`.
fn pieces_text(batch: usize, at_once: usize) -> String {
    format!(
        "each step computes them in {} pieces of at most {at_once} images and sums their gradients (the same \
         step as the batch at once, up to rounding)",
        batch.div_ceil(at_once.max(1))
    )
}
