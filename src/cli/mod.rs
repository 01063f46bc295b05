//! The commands behind the `peft-wgpu` binary (SPEC §11), as library functions.
//!
//! Each command first checks everything it can on the host: flags and numbers, every path
//! (missing, a file where a folder is expected or the reverse, an output that cannot be
//! written), every file's format, the adapter against the model's architecture, and the data
//! against the model and the classifier's labels. Only then does it open the GPU, so a bad
//! input is reported by name, quickly, even on a machine without one. Outputs are written
//! atomically, and an existing adapter is never replaced without `--force`.

mod checks;
mod inputs;

use checks::{
    Blame, at_least_one, check_logits, check_optimizer, check_rows, fitting_batch, non_finite_logits,
    refuse_one_stream_twice, refuse_overwriting_inputs, refuse_special_outputs,
};
use inputs::{
    AdapterInput, read_data, read_model, read_model_for_loss, refuse_headless, refuse_merged_twice, refuse_other_type,
    tokens,
};

use std::path::{Path, PathBuf};

use crate::adapters::{AdapterConfig, CONFIG_FILE, PeftType, WEIGHTS_FILE, check_adapter_folder};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::json::JsonFile;
use crate::io::paths::{check_output_dir, check_output_file, expect_file};
use crate::io::safetensors::{self as st, HostTensor};
use crate::nn::{Naming, Vit};
use crate::optim::OptimizerKind;
use crate::train::{
    BatchOrder, EvalReport, StepReport, TrainOptions, evaluate_with_progress, first_non_finite_image, first_rows,
    rows_of_step, train as train_loop,
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

/// Whether `dir` already holds an adapter (PEFT's older `adapter_model.bin` included).
pub fn holds_adapter(dir: &Path) -> bool {
    crate::io::paths::holds_any(dir, &crate::io::paths::ADAPTER_FILES)
}

/// Whether `dir` already holds a model: its config, its weights (PyTorch's `.bin` included),
/// or the index of its shards.
pub fn holds_model(dir: &Path) -> bool {
    crate::io::paths::holds_any(dir, &crate::io::paths::MODEL_FILES)
}

/// What a caller of [`train`] hears about the run.
pub trait Progress {
    /// Training is about to start: PEFT's trainable-parameter line and the step count.
    fn started(&mut self, _summary: &str, _steps: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// A line for the user in the middle of a run (a note), on stderr.
    fn note(&mut self, line: &str) {
        note!("{line}");
    }
    /// Evaluation has done `images` of `total` images.
    fn evaluated(&mut self, _images: usize, _total: usize) {}
    /// Training ended after `steps` steps with `final_loss`, and the adapter is saved in `out`
    /// (before `--eval-data` is evaluated). An error ends the run, the adapter kept.
    fn saved(&mut self, _steps: usize, _final_loss: f32, _out: &Path) -> Result<()> {
        Ok(())
    }
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
    at_least_one("--batch-size", Some(args.batch_size))?;
    at_least_one("--steps", args.steps)?;
    if let Some(e) = args.epochs
        && !(e.is_finite() && e > 0.0)
    {
        return Err(Error::invalid("--epochs", format!("must be a positive number, got {e}")));
    }
    check_optimizer(args.lr, &args.optimizer)?;
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
    let data_files: Vec<&Path> = std::iter::once(&args.data).chain(&args.eval_data).map(PathBuf::as_path).collect();
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
    let weights = read_model_for_loss(&args.model)?;
    let model = &weights.config;
    let adapter = match (&args.adapter_config, &args.init) {
        (Some(path), init) => {
            if path.join(CONFIG_FILE).is_file() {
                let message = format!(
                    "is a folder, expected an adapter_config.json for --adapter-config (its own is {}; to start \
                     from the adapter in it, pass the folder as --init)",
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
            AdapterInput::new(config, path, weights.as_deref(), model)?
        }
        (None, Some(init)) => AdapterInput::folder(init, "--init", model)?,
        (None, None) => {
            return Err(Error::invalid("--adapter-config", "is required (or --init with an adapter folder)"));
        }
    };
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
    let steps = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, e) => {
            // ceil(E·N/B) steps, at least one: the images E passes cover, in full batches.
            let epochs = e.unwrap_or(1.0);
            let images = epochs * data.len() as f64;
            if images > (1u64 << 50) as f64 {
                return Err(Error::invalid(
                    "--epochs",
                    // 1.79e308 rather than its 309 digits.
                    format!("{epochs:e} passes over {} images is too many steps", data.len()),
                ));
            }
            // E·N images, rounded where the product is a whole number but for f64's error
            // (1.1 × 100 is 110.00000000000001), then full batches.
            let whole = images.round();
            let images = if (images - whole).abs() <= 1e-9 * whole.max(1.0) { whole } else { images.ceil() };
            (images as usize).div_ceil(args.batch_size).max(1)
        }
    };
    let tokens = tokens(&weights, Some(&adapter))?;
    // A batch larger than the device takes at once is computed in pieces whose gradients are
    // summed; only one image must fit, and the list of the step's rows in memory.
    check_rows(args.batch_size)?;
    fitting_batch(model, (tokens, adapter.labels), &data, args.batch_size, None)?;

    let gpu = Gpu::new()?;
    let at_once = fitting_batch(model, (tokens, adapter.labels), &data, args.batch_size, Some(&gpu))?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    let mut adapter = adapter;
    let model_name = args.model.to_string_lossy();
    if let Some(other) = adapter.config.set_base_model(&model_name) {
        // The same folder spelled otherwise (relative, with `./`, a trailing slash) keeps the
        // config's spelling, without a word.
        let same = |a: &Path| a.canonicalize().ok();
        if same(Path::new(&other)).is_some_and(|o| Some(o) == same(&args.model)) {
            adapter.config.set_base_model(&other);
        } else {
            let shown: String = other.chars().take(120).collect();
            let cut = if shown.len() < other.len() { "…" } else { "" };
            note!(
                "note: the adapter config names `{shown}{cut}` as its base model; it is saved naming --model, \
                 `{model_name}`"
            );
        }
    }
    // The file a non-finite start is blamed on: the weights started from, or the config.
    let start_file = adapter.source_file();
    let mut adapter = adapter.build(&gpu, &vit, args.seed)?;
    match lora_naming {
        Some(naming) => adapter.set_lora_naming(naming),
        None => note_lora_naming(&adapter, &args.model),
    }
    let adapter = adapter;
    let summary = adapter.trainable_summary();
    let mut started = summary.clone();
    if args.batch_size > data.len() {
        started += &format!(
            "\nnote: --batch-size {} is more than the {} images of --data, so each batch repeats images",
            args.batch_size,
            data.len()
        );
    }
    if let Some(p) = &weights.prompts {
        started += &format!("\n{}", prompts_note(p.shape[0]));
    }
    if at_once < args.batch_size {
        started += &format!("\n{}", pieces_note(args.batch_size, at_once));
    }
    progress.started(&started, steps);
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
    match &trained {
        Err(Error::NonFiniteLoss { step: 0, .. }) => {
            // Before any update a non-finite loss comes from the inputs: name the image and
            // the file at fault rather than report a divergence.
            let found = first_rows(&options, data.len())
                .and_then(|rows| first_non_finite_image(&gpu, &vit, Some(&adapter), &data, &rows));
            if let Ok(Some(found)) = found {
                let blame = Blame { gpu: &gpu, vit: &vit, adapter: Some((&adapter, &start_file)) };
                return Err(non_finite_logits(&blame, &data, found));
            }
        }
        Err(Error::NonFiniteLoss { step, .. }) => {
            // After updates it is a divergence, unless the model alone cannot compute an
            // image of that step's batch: then the data is at fault, whatever the updates.
            let found = rows_of_step(&options, data.len(), *step)
                .and_then(|rows| first_non_finite_image(&gpu, &vit, None, &data, &rows));
            if let Ok(Some(found)) = found {
                let blame = Blame { gpu: &gpu, vit: &vit, adapter: None };
                return Err(non_finite_logits(&blame, &data, found));
            }
        }
        _ => {}
    }
    trained?;
    // Checked again under the folder's lock, as the save starts: another run may have saved
    // an adapter there while this one trained.
    adapter.save_checked(&gpu, &args.out, || {
        if holds_model(&args.out) {
            return Err(Error::invalid(
                "--out",
                format!(
                    "{} received a model (config.json or model.safetensors) from another run while this one \
                     trained; an adapter saved beside it would be applied whenever transformers loads that folder, \
                     so nothing was saved; choose another folder",
                    args.out.display()
                ),
            ));
        }
        if holds_adapter(&args.out) && !args.force {
            return Err(Error::invalid(
                "--out",
                format!(
                    "{} received an adapter from another run while this one trained; nothing was saved (pass \
                     --force to overwrite it, or choose another folder)",
                    args.out.display()
                ),
            ));
        }
        Ok(())
    })?;
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
            let blame = Blame { gpu: &gpu, vit: &vit, adapter: Some((&adapter, &weights)) };
            check_logits(&report, d, &blame).map_err(saved)?;
            Some(report)
        }
        None => None,
    };
    Ok(TrainOutcome { steps, final_loss: last, summary, eval })
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
fn note_lora_naming(adapter: &crate::adapters::Adapter, model: &Path) {
    // Keys outside the layers (`classifier`, the patch embedding) are the same in both.
    let layer_keys = adapter
        .trainable()
        .iter()
        .any(|p| p.key.strip_prefix(crate::adapters::PEFT_PREFIX).and_then(Naming::of_path).is_some());
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

/// `peft-wgpu eval`: accuracy and mean loss; with `logits_out`, writes the logits (the report
/// holds them only then: `EvalReport::logits` is empty otherwise).
pub fn eval(
    model: &Path,
    adapter: Option<&Path>,
    data: &Path,
    batch_size: usize,
    logits_out: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    at_least_one("--batch-size", Some(batch_size))?;
    if let Some(path) = logits_out {
        check_output_file(path, "--logits-out", crate::io::paths::Replaces::Logits)?;
        refuse_overwriting_inputs(path, "--logits-out", &[data, model, adapter.unwrap_or(model)])?;
    }
    let weights = read_model_for_loss(model)?;
    let adapter = adapter.map(|dir| AdapterInput::folder(dir, "--adapter", &weights.config)).transpose()?;
    refuse_headless(&weights, model, adapter.as_ref())?;
    if let Some(a) = &adapter {
        refuse_merged_twice(
            &weights,
            model,
            a,
            "--adapter",
            "evaluate the merged model alone, or the base model with it",
        )?;
    }
    let labels = adapter.as_ref().map_or(weights.config.num_labels, |a| a.labels);
    if labels == 1 && weights.config.problem_type.is_none() {
        // transformers scores such a head by regression (mean squared error), not by accuracy.
        let from = adapter.as_ref().map_or(model.join("config.json"), |a| a.labels_config(model, &weights.config));
        let message = "is 1 and config.json sets no problem_type, so transformers scores the head by \
                       regression; eval computes accuracy and cross-entropy over class labels, which needs a \
                       head of at least 2 labels";
        return Err(Error::Config { path: from, key: "num_labels".into(), message: message.into() });
    }
    let data = read_data(data, "--data", &weights.config, labels)?;
    if let Some(path) = logits_out {
        // The logits and the file made of them are both in memory while it is written.
        let bytes = (data.len() as u64).saturating_mul(labels as u64).saturating_mul(8);
        if let Some(free) = crate::io::memory::shortfall(bytes) {
            let message = format!(
                "the logits of {} images × {labels} labels need {bytes} bytes of memory to write, more than the \
                 {free} bytes this process can still get; evaluate fewer images at a time (split the data file)",
                data.len()
            );
            return Err(Error::Io { path: path.to_path_buf(), source: std::io::Error::other(message) });
        }
    }
    let tokens = tokens(&weights, adapter.as_ref())?;
    let asked = batch_size.min(data.len());
    let batch = fitting_batch(&weights.config, (tokens, labels), &data, asked, None)?;

    let gpu = Gpu::new()?;
    let batch = fitting_batch(&weights.config, (tokens, labels), &data, batch, Some(&gpu))?;
    if batch < asked {
        note!(
            "note: --batch-size {batch_size} is more than the {batch} images of this model that one tensor on this \
             device holds; evaluating {batch} at a time (the results do not depend on the batch size)"
        );
    }
    let vit = Vit::from_weights(&gpu, &weights)?;
    let adapter_file = adapter.as_ref().map(AdapterInput::source_file);
    let adapter = adapter.map(|a| a.build(&gpu, &vit, 0)).transpose()?;
    let mut report =
        evaluate_with_progress(&gpu, &vit, adapter.as_ref(), &data, batch, logits_out.is_some(), &mut |i, n| {
            progress.evaluated(i, n);
        })?;
    let blame = Blame { gpu: &gpu, vit: &vit, adapter: adapter.as_ref().zip(adapter_file.as_deref()) };
    check_logits(&report, &data, &blame)?;
    if let Some(path) = logits_out {
        let t = HostTensor::new(vec![data.len(), report.labels], std::mem::take(&mut report.logits))?;
        crate::io::atomic::write_output(path, &st::serialize(path, &[("logits".to_string(), &t)], None)?)?;
        report.logits = t.data;
    }
    Ok(report)
}

/// `peft-wgpu merge`: writes a model folder with the adapter folded in. An `out` that already
/// holds a model (or is the `--model` folder) is refused unless `force`. Returns the number of
/// merged RLP prompt tokens the written model holds (`prompt_embeddings`), 0 for none.
pub fn merge(model: &Path, adapter: &Path, out: &Path, force: bool) -> Result<usize> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if !force && same(model, out) {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} is the --model folder; the merged model would replace the base one (pass --force to do that)",
                out.display()
            ),
        ));
    }
    let refuse_held = || {
        if holds_adapter(out) {
            return Err(Error::invalid(
                "--out",
                format!(
                    "{} holds an adapter; a merged model beside it would get the adapter applied again by \
                     PEFT-aware loaders; choose another folder",
                    out.display()
                ),
            ));
        }
        if !force && holds_model(out) {
            return Err(Error::invalid(
                "--out",
                format!("{} already holds a model; pass --force to overwrite it", out.display()),
            ));
        }
        Ok(())
    };
    refuse_held()?;
    check_output_dir(out, "--out")?;
    refuse_special_outputs(out, &["config.json", "model.safetensors", "model.safetensors.index.json"])?;
    let weights = read_model(model)?;
    let input = AdapterInput::folder(adapter, "--adapter", &weights.config)?;
    refuse_headless(&weights, model, Some(&input))?;
    // Force or not: `--force` is for replacing `--out` (the model itself, merging in place).
    refuse_merged_twice(&weights, model, &input, "--adapter", "merge it into the base model")?;
    if input.config.peft_type() == PeftType::Moppa {
        return Err(Error::invalid(
            "--adapter",
            format!(
                "{} is a MoPPA adapter, which filters tokens in the frequency domain and cannot be folded into \
                 the ViT's weights; evaluate it with `eval --adapter` instead",
                adapter.display()
            ),
        ));
    }

    let gpu = Gpu::new()?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    // Recorded in the merged weights, so that the adapter is not applied to them again.
    let fingerprint = input.weights.as_ref().map(crate::io::safetensors::TensorFile::fingerprint);
    let adapter = input.build(&gpu, &vit, 0)?;
    let mut merged = adapter.merge(&gpu, &weights)?;
    merged.merged_adapters.extend(fingerprint);
    // The merged config is the model's own with the adapter's labels: fields this crate does
    // not read (transformers' version, pooler settings, custom keys) are kept.
    let original = JsonFile::read(&model.join("config.json"))?;
    // Checked again under the folder's lock: another run may have saved there meanwhile.
    merged.save_checked(out, merged.config.to_json_over(original.object()), refuse_held)?;
    let dtype = ["torch_dtype", "dtype"].into_iter().find_map(|k| original.opt_string(k).ok().flatten());
    if let Some(dtype) = dtype.filter(|d| !matches!(d.as_str(), "float32" | "float" | "auto")) {
        note!(
            "note: the merged weights are written in float32 (the model's config.json says {dtype}), so they take \
             more room; its config now says float32"
        );
    }
    Ok(merged.prompts.as_ref().map_or(0, |p| p.shape[0]))
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

/// What to tell the user about a model with `n` merged RLP prompt tokens: only this crate
/// inserts them.
pub fn prompts_note(n: usize) -> String {
    format!(
        "note: the model holds {n} merged RLP prompt token{} (`prompt_embeddings` in its weights), which \
         peft-wgpu inserts after CLS; transformers' ViTForImageClassification (and PEFT on it) ignores that \
         tensor and computes other outputs",
        if n == 1 { "" } else { "s" }
    )
}
