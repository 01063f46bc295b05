//! Reading a command's inputs (model, data, adapter) and checking them against each other on
//! the host, before any GPU work.

use std::path::{Path, PathBuf};

use crate::adapters::{Adapter, AdapterConfig, AdapterKind, CONFIG_FILE, PeftType, read_adapter_folder};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::json::JsonFile;
use crate::io::paths::expect_file;
use crate::io::safetensors::TensorFile;
use crate::nn::{Vit, VitConfig, VitWeights};

/// An adapter's config and tensors read and checked against a model, before any GPU work.
pub(super) struct AdapterInput {
    pub(super) config: AdapterConfig,
    pub(super) config_path: PathBuf,
    /// `None` for a fresh adapter.
    pub(super) weights: Option<TensorFile>,
    /// Labels of the adapted classifier.
    pub(super) labels: usize,
}

impl AdapterInput {
    /// `config`, read from `config_path`, with the weights file when given, checked against
    /// `model`.
    pub(super) fn new(
        config: AdapterConfig,
        config_path: &Path,
        weights: Option<&Path>,
        model: &VitConfig,
    ) -> Result<AdapterInput> {
        let weights = weights.map(TensorFile::open).transpose()?;
        let labels = Adapter::check(config.clone(), config_path, weights.as_ref(), model)?;
        Ok(AdapterInput { config, config_path: config_path.to_path_buf(), weights, labels })
    }

    /// The file the adapter's values come from, for messages about them: its weights, or
    /// the config of a fresh one.
    pub(super) fn source_file(&self) -> PathBuf {
        self.weights.as_ref().map_or_else(|| self.config_path.clone(), |w| w.path().to_path_buf())
    }

    /// The adapter folder `dir` (its config and weights).
    pub(super) fn folder(dir: &Path, flag: &str, model: &VitConfig) -> Result<AdapterInput> {
        let (config, weights) = read_adapter_folder(dir, &format!("an adapter folder for {flag}"))?;
        let config_path = dir.join(CONFIG_FILE);
        let labels = Adapter::check(config.clone(), &config_path, Some(&weights), model)?;
        Ok(AdapterInput { config, config_path, weights: Some(weights), labels })
    }

    /// The config that sets the adapted classifier's label count, for messages about it: the
    /// adapter's when it gives the head another count than `model`'s, else the model's
    /// `config.json` in `model_dir`.
    pub(super) fn labels_config(&self, model_dir: &Path, model: &VitConfig) -> PathBuf {
        if self.labels == model.num_labels { model_dir.join("config.json") } else { self.config_path.clone() }
    }

    /// Uploads the adapter, with a note for each part of its config that changes nothing.
    pub(super) fn build(self, gpu: &Gpu, vit: &Vit, seed: u64) -> Result<Adapter> {
        let adapter = match &self.weights {
            Some(file) => Adapter::from_file_seeded(gpu, self.config, &self.config_path, file, vit, seed),
            None => Adapter::new(gpu, self.config, &self.config_path, vit, seed),
        }?;
        for line in adapter.config_notes() {
            note!("note: {}: {line}", self.config_path.display());
        }
        Ok(adapter)
    }
}

/// Refuses the adapter of `flag` when it is already merged into the `--model` folder `model`
/// (its weight file's fingerprint is listed in the model's, see
/// [`crate::io::stamp::MERGED_KEY`]): applying it again would count it twice. `hint` says
/// how to go on.
pub(super) fn refuse_merged_twice(
    weights: &VitWeights,
    model: &Path,
    adapter: &AdapterInput,
    flag: &str,
    hint: &str,
) -> Result<()> {
    let Some(file) = adapter.weights.as_ref().filter(|_| !weights.merged_adapters.is_empty()) else { return Ok(()) };
    if !weights.merged_adapters.contains(&file.fingerprint()) {
        return Ok(());
    }
    let folder = file.path().parent().unwrap_or(Path::new("."));
    Err(Error::invalid(
        flag,
        format!(
            "{} is already merged into the model {} (the model's weights list it), so applying it again would \
             count it twice; {hint}",
            folder.display(),
            model.display()
        ),
    ))
}

/// Refuses a model folder without a classifier ([`VitWeights::headless`], a `ViTModel`
/// backbone) unless `adapter` brings a head of its own (saves `classifier`; a file must then
/// hold it).
pub(super) fn refuse_headless(weights: &VitWeights, model: &Path, adapter: Option<&AdapterInput>) -> Result<()> {
    if !weights.headless || adapter.is_some_and(|a| a.config.saves_module(crate::nn::ModuleId::Classifier)) {
        return Ok(());
    }
    Err(Error::Format { path: model.to_path_buf(), message: crate::train::HEADLESS.into() })
}

/// Refuses `--init DIR` whose own config is of another adapter type than `given`, the type of
/// `--adapter-config` (`config_path`): its tensors could not be those of the given config.
pub(super) fn refuse_other_type(given: PeftType, config_path: &Path, init: &Path) -> Result<()> {
    let own = init.join(CONFIG_FILE);
    if !own.is_file() {
        return Ok(()); // a folder of weights only: the tensors are checked against the config
    }
    // Only the folder's `peft_type`: the rest of its config is overridden by --adapter-config.
    // Told apart by name only (a misspelt one is refused by name when the folder is read).
    let other = |f: &String| !f.eq_ignore_ascii_case(given.as_str());
    if let Some(found) = JsonFile::read(&own)?.opt_string("peft_type")?.filter(other) {
        return Err(Error::invalid(
            "--init",
            format!(
                "{} holds a {} adapter, but --adapter-config {} is {}",
                init.display(),
                found,
                config_path.display(),
                given.as_str()
            ),
        ));
    }
    Ok(())
}

/// Reads a data file named by `flag` and checks it against the model and `labels`.
pub(super) fn read_data(path: &Path, flag: &str, model: &VitConfig, labels: usize) -> Result<Dataset> {
    expect_file(path, &format!("a data file for {flag}"))?;
    let data = Dataset::load(path)?;
    data.check_fits(model.num_channels, model.image_size, labels)?;
    Ok(data)
}

/// Reads the model folder named by `--model`.
pub(super) fn read_model(dir: &Path) -> Result<VitWeights> {
    VitWeights::load_as(dir, "a model folder for --model")
}

/// [`read_model`] for `train` and `eval`, which compute the mean cross-entropy over single
/// labels (SPEC §12): a model whose config asks transformers for another loss
/// (`problem_type` `regression` or `multi_label_classification`) is refused, as its
/// training and scores would mean something else there.
pub(super) fn read_model_for_loss(dir: &Path) -> Result<VitWeights> {
    let weights = read_model(dir)?;
    match weights.config.problem_type.as_deref() {
        Some(kind) if kind != "single_label_classification" => Err(Error::Config {
            path: dir.join("config.json"),
            key: "problem_type".into(),
            message: format!(
                "is `{kind}`, for which transformers computes another loss; train and eval compute the \
                 cross-entropy of single-label classification (set it to `single_label_classification` or \
                 remove it)"
            ),
        }),
        _ => Ok(weights),
    }
}

/// Tokens per image: the model's, a merged model's prompts and the adapter's prompt tokens
/// (which with the merged ones must stay within the bound of prompt tokens).
pub(super) fn tokens(weights: &VitWeights, adapter: Option<&AdapterInput>) -> Result<usize> {
    let merged = weights.prompts.as_ref().map_or(0, |p| p.shape[0]);
    let prompts = match adapter {
        Some(AdapterInput { config: AdapterConfig { kind: AdapterKind::Rlp(c), .. }, config_path, .. }) => {
            crate::adapters::rlp::check_total(config_path, c.num_prompt_tokens, merged)?;
            c.num_prompt_tokens
        }
        _ => 0,
    };
    Ok(weights.config.tokens() + merged + prompts)
}
