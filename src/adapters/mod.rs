//! The adapters: LoRA (exactly PEFT's), FLoRA, MoPPA and RLP, with saved modules, their
//! files (SPEC §9), binding onto a tape, and merging.
//!
//! An [`Adapter`] owns its tensors on the GPU, in a fixed order with their file keys. Each
//! step, [`Adapter::bind`] puts them on a tape as trainable leaves and returns a
//! [`BoundAdapter`], which the ViT consults through [`VitHooks`] at every point where an
//! adapter acts.

mod bound;
pub mod config;
mod files;
pub mod flora;
mod flora_conv;
mod lora;
mod merge;
pub mod moppa;
mod params;
pub mod rlp;
mod saved;
mod source;

use std::path::{Path, PathBuf};

pub use bound::BoundAdapter;
pub use config::{
    AdapterConfig, AdapterKind, FloraConfig, FloraRank, LoraConfig, LoraInit, MoppaConfig, PeftType, RlpConfig,
};
use files::check_pair;
pub use files::finish_interrupted_save;
pub use params::{PEFT_PREFIX, Param};

use params::{ParamBuilder, Slot, Value};
use source::{Init, Source};

use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::{HostTensor, TensorFile};
use crate::nn::{ModuleId, Naming, Vit, VitConfig};
use crate::rng::Rng;

/// File name of the adapter's tensors.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter's config.
pub const CONFIG_FILE: &str = "adapter_config.json";

enum Kind {
    Lora(Vec<lora::LoraModule>),
    Flora(Vec<flora::FloraModule>),
    Moppa(moppa::MoppaParts),
    Rlp(rlp::RlpParts),
}

/// An adapter for one ViT, its tensors on the GPU.
pub struct Adapter {
    /// The config it was built from.
    pub config: AdapterConfig,
    trainable: Vec<Param>,
    frozen: Vec<Param>,
    kind: Kind,
    saved: Vec<saved::SavedModule>,
    num_labels: usize,
    base_parameters: usize,
}

/// State while an adapter is built from a config and a source of tensors.
pub(crate) struct Build<'a> {
    pub(crate) model: &'a VitConfig,
    pub(crate) config_path: &'a Path,
    pub(crate) saved: Vec<ModuleId>,
    preferred: Naming,
    /// The namings the file's layer keys use (empty for a fresh adapter).
    file_namings: Vec<Naming>,
    source: Source<'a>,
    params: ParamBuilder,
    /// Largest tensor the device takes, in bytes, and the limit that sets it; checked before
    /// any value is made.
    max_bytes: (u64, &'static str),
}

impl Build<'_> {
    /// Fails with [`Error::TooLarge`] naming `key` when a tensor of `shape` would not fit the
    /// device (or overflows), before anything is allocated for it.
    fn check_size(&self, key: &str, shape: &[usize]) -> Result<()> {
        let bytes = shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64));
        let (max, limit) = self.max_bytes;
        match bytes {
            Some(b) if b <= max => Ok(()),
            _ => Err(Error::TooLarge {
                what: format!("adapter tensor `{key}` of shape {shape:?} (from {})", self.config_path.display()),
                bytes: bytes.unwrap_or(u64::MAX),
                limit,
                max,
            }),
        }
    }

    /// A trainable tensor from the source.
    pub(crate) fn trainable(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Slot> {
        self.check_size(key, shape)?;
        let t = self.source.tensor(key, shape, init)?;
        Ok(self.params.train(key.to_string(), Value::Host(t)))
    }

    /// A frozen tensor from the source.
    pub(crate) fn frozen(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Slot> {
        self.check_size(key, shape)?;
        let t = self.source.tensor(key, shape, init)?;
        Ok(self.params.freeze(key.to_string(), Value::Host(t)))
    }

    /// Zeros of `shape` for `key` that come from no file (a new classifier head).
    pub(crate) fn zeros(&self, key: &str, shape: &[usize]) -> Result<HostTensor> {
        self.check_size(key, shape)?;
        Ok(self.source.zeros(shape))
    }

    pub(crate) fn params_mut(&mut self) -> &mut ParamBuilder {
        &mut self.params
    }

    pub(crate) fn is_file(&self) -> bool {
        self.source.is_file()
    }

    pub(crate) fn source_any_shape(&mut self, key: &str) -> Result<Option<HostTensor>> {
        self.source.any_shape(key)
    }

    /// The weights file, for messages.
    pub(crate) fn weights_path(&self) -> PathBuf {
        match &self.source {
            Source::File { file, .. } => file.path().to_path_buf(),
            Source::Fresh(_) | Source::Shapes => PathBuf::from(WEIGHTS_FILE),
        }
    }

    /// The naming of `module`'s keys: whichever the file uses (probing `<path>.<leaf>`), or
    /// for a new adapter the one its config prefers when `matched` (whether the module's
    /// target matches its path under a naming) allows, else the one that matched. A file so
    /// written keys each layer module in a naming its target names it by, which is the naming
    /// PEFT looks it up under.
    pub(crate) fn key_naming(&self, module: ModuleId, matched: impl Fn(Naming) -> bool, leaf: &str) -> Naming {
        if !matches!(module, ModuleId::Layer(..)) {
            return Naming::OnDisk; // the same path under both namings
        }
        let first = if matched(self.preferred) { self.preferred } else { self.preferred.other() };
        if !self.source.is_file() {
            return first;
        }
        [first, first.other()]
            .into_iter()
            .find(|&n| self.source.has(&format!("{PEFT_PREFIX}{}.{leaf}", module.path(n))))
            .unwrap_or(first)
    }

    /// The key stem (`base_model.model.<path>`) of a LoRA or FLoRA module whose first tensor is
    /// `<stem>.<leaf>`, in the naming [`Build::key_naming`] picks; `None` when the file left the
    /// module out ([`Build::left_out_by_file`]), its would-be key then kept in `left_out` (the
    /// first such) for [`Build::require_adapted`].
    pub(crate) fn module_stem(
        &self,
        module: ModuleId,
        matched: impl Fn(Naming) -> bool + Copy,
        leaf: &str,
        left_out: &mut Option<String>,
    ) -> Option<String> {
        let stem = format!("{PEFT_PREFIX}{}", module.path(self.key_naming(module, matched, leaf)));
        if self.left_out_by_file(module, matched, leaf) {
            left_out.get_or_insert_with(|| format!("{stem}.{leaf}"));
            return None;
        }
        Some(stem)
    }

    /// Fails when a LoRA or FLoRA config adapts no module: naming the first tensor the file
    /// lacks when modules were left out for the file's naming (`left_out`, a broken file being
    /// likelier then), else `target_modules` and the `filters` that removed the rest.
    pub(crate) fn require_adapted(&self, adapted: usize, left_out: Option<String>, filters: &str) -> Result<()> {
        match (adapted, left_out) {
            (0, Some(key)) => Err(Error::MissingTensor { path: self.weights_path(), key }),
            (0, None) => Err(Error::Config {
                path: self.config_path.to_path_buf(),
                key: "target_modules".into(),
                message: format!("leaves no module to adapt once {filters} are applied"),
            }),
            _ => Ok(()),
        }
    }

    /// Whether a file left `module` out the way PEFT does: the module's target names it only
    /// under namings none of the file's layer keys use, and the file has no `<path>.<leaf>`
    /// for it. PEFT sees one naming (its transformers version's), so a config such as
    /// `["q_proj", "value"]` adapts only `q_proj` under transformers 5, and
    /// `["projection", "q_proj"]` only the patch embedding under transformers 4.
    fn left_out_by_file(&self, module: ModuleId, matched: impl Fn(Naming) -> bool, leaf: &str) -> bool {
        if !self.source.is_file() || !matches!(module, ModuleId::Layer(..)) {
            return false;
        }
        let has = |n: Naming| self.source.has(&format!("{PEFT_PREFIX}{}.{leaf}", module.path(n)));
        let uses = |n: Naming| self.file_namings.contains(&n);
        !Naming::BOTH.into_iter().any(has) && Naming::BOTH.into_iter().all(|n| !matched(n) || !uses(n))
    }
}

/// An adapter worked out on the host: every tensor's key, shape and (unless a dry run) value.
struct Plan {
    config: AdapterConfig,
    kind: Kind,
    saved: Vec<saved::SavedModule>,
    num_labels: usize,
    params: ParamBuilder,
}

impl Adapter {
    /// A freshly initialised adapter (SPEC's initialisations), seeded by `seed`.
    pub fn new(gpu: &Gpu, config: AdapterConfig, config_path: &Path, vit: &Vit, seed: u64) -> Result<Adapter> {
        Adapter::build(gpu, config, config_path, vit, Source::Fresh(Rng::new(seed)))
    }

    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors` (finishing a save
    /// that was killed between its two renames first, see [`finish_interrupted_save`]).
    pub fn load(gpu: &Gpu, dir: &Path, vit: &Vit) -> Result<Adapter> {
        crate::io::paths::expect_dir(dir, "an adapter folder", CONFIG_FILE)?;
        finish_interrupted_save(dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let config = AdapterConfig::read(&config_path)?;
        Adapter::load_tensors(gpu, config, &config_path, &dir.join(WEIGHTS_FILE), vit)
    }

    /// An adapter with `config` whose tensors come from `weights` (an
    /// `adapter_model.safetensors`); every tensor must be present, well-shaped and used.
    pub fn load_tensors(
        gpu: &Gpu,
        config: AdapterConfig,
        config_path: &Path,
        weights: &Path,
        vit: &Vit,
    ) -> Result<Adapter> {
        Adapter::from_file(gpu, config, config_path, &TensorFile::open(weights)?, vit)
    }

    /// An adapter with `config` whose tensors come from an opened `adapter_model.safetensors`.
    pub fn from_file(
        gpu: &Gpu,
        config: AdapterConfig,
        config_path: &Path,
        weights: &TensorFile,
        vit: &Vit,
    ) -> Result<Adapter> {
        check_pair(config_path, weights)?;
        Adapter::build(gpu, config, config_path, vit, Source::file(weights))
    }

    /// Checks on the host, without a GPU, that `config` (with tensors from `weights`, or fresh
    /// ones when `None`) fits a model with `model`'s architecture: targets that match, every
    /// tensor present, well-shaped and used, sizes that can be indexed. Returns the label
    /// count of the adapted classifier. [`Adapter::load_tensors`] and [`Adapter::new`] make
    /// the same checks; this runs them before any device work.
    pub fn check(
        config: AdapterConfig,
        config_path: &Path,
        weights: Option<&TensorFile>,
        model: &VitConfig,
    ) -> Result<usize> {
        let source = match weights {
            Some(file) => {
                check_pair(config_path, file)?;
                Source::file(file)
            }
            None => Source::Shapes,
        };
        let max_bytes = (crate::gpu::MAX_TENSOR_BYTES, crate::gpu::MAX_TENSOR_LIMIT);
        Ok(Adapter::plan(config, config_path, model, source, max_bytes)?.num_labels)
    }

    fn plan(
        mut config: AdapterConfig,
        config_path: &Path,
        model: &VitConfig,
        source: Source<'_>,
        max_bytes: (u64, &'static str),
    ) -> Result<Plan> {
        if config.num_labels.is_some() && !config.saves_module(ModuleId::Classifier) {
            // A new head is a saved module, as in PEFT.
            config.modules_to_save.push("classifier".into());
        }
        let saved: Vec<ModuleId> =
            ModuleId::all(model.num_hidden_layers).into_iter().filter(|&m| config.saves_module(m)).collect();
        if saved.is_empty() && !config.modules_to_save.is_empty() {
            return Err(Error::Config {
                path: config_path.to_path_buf(),
                key: "modules_to_save".into(),
                message: format!("{:?} matches no module of the model", config.modules_to_save),
            });
        }
        let preferred = match &config.kind {
            AdapterKind::Lora(c) => AdapterConfig::preferred_naming(&c.target_modules, model.num_hidden_layers),
            AdapterKind::Flora(c) => AdapterConfig::preferred_naming(&c.target_modules, model.num_hidden_layers),
            _ => Naming::OnDisk,
        };
        let file_namings = source.layer_namings();
        let mut b = Build {
            model,
            config_path,
            saved,
            preferred,
            file_namings,
            source,
            params: ParamBuilder::default(),
            max_bytes,
        };
        let kind = match &config.kind {
            AdapterKind::Lora(c) => Kind::Lora(lora::build(c, &mut b)?),
            AdapterKind::Flora(c) => Kind::Flora(flora::build(c, &mut b)?),
            AdapterKind::Moppa(c) => Kind::Moppa(moppa::build(c, &mut b)?),
            AdapterKind::Rlp(c) => Kind::Rlp(rlp::build(c, &mut b)?),
        };
        let saved_modules = b.saved.clone();
        let saves_under = |m: ModuleId, n: Naming| config.saves_module_under(m, n);
        let (saved, num_labels) = saved::build(&saved_modules, saves_under, config.num_labels, &mut b)?;
        let Build { source, params, .. } = b;
        source.finish()?;
        Ok(Plan { config, kind, saved, num_labels, params })
    }

    fn build(gpu: &Gpu, config: AdapterConfig, config_path: &Path, vit: &Vit, source: Source<'_>) -> Result<Adapter> {
        let max_bytes = gpu.max_tensor_bytes();
        let Plan { config, mut kind, saved, num_labels, params } =
            Adapter::plan(config, config_path, &vit.config, source, max_bytes)?;
        if let Kind::Moppa(m) = &mut kind {
            m.attach(gpu)?;
        }
        let (trainable, frozen) = params.upload(gpu, vit.weights())?;
        Ok(Adapter { config, trainable, frozen, kind, saved, num_labels, base_parameters: vit.num_parameters() })
    }

    /// The trainable tensors with their file keys, in a fixed order.
    pub fn trainable(&self) -> &[Param] {
        &self.trainable
    }

    /// The frozen tensors of the adapter (RLP's `P₀`).
    pub fn frozen(&self) -> &[Param] {
        &self.frozen
    }

    /// Labels of the adapted model's classifier.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Number of trainable values.
    pub fn num_trainable(&self) -> usize {
        self.trainable.iter().map(|p| p.tensor.len()).sum()
    }

    /// PEFT's `print_trainable_parameters` line: trainable values, all values (the base model
    /// plus every adapter tensor, saved copies included) and the percentage.
    pub fn trainable_summary(&self) -> String {
        let trainable = self.num_trainable();
        let all = self.base_parameters + trainable + self.frozen.iter().map(|p| p.tensor.len()).sum::<usize>();
        format!(
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(trainable),
            thousands(all),
            100.0 * trainable as f64 / all.max(1) as f64
        )
    }

    /// Puts the tensors on `tape` (trainable leaves and constants) for evaluation: no dropout.
    pub fn bind(&self, tape: &mut Tape) -> BoundAdapter<'_> {
        BoundAdapter {
            adapter: self,
            vars: self.trainable.iter().map(|p| tape.param(&p.tensor)).collect(),
            frozen: self.frozen.iter().map(|p| tape.constant(&p.tensor)).collect(),
            dropout_seed: None,
        }
    }

    /// Like [`Adapter::bind`], for a training step: LoRA's dropout is on, its masks drawn
    /// from `seed` (give every step its own).
    pub fn bind_train(&self, tape: &mut Tape, seed: u64) -> BoundAdapter<'_> {
        BoundAdapter { dropout_seed: Some(seed), ..self.bind(tape) }
    }

    /// MoPPA's entropy weight `λ_t` at `step` of `total` (0 for other adapters).
    pub fn entropy_weight(&self, step: usize, total: usize) -> f64 {
        match &self.kind {
            Kind::Moppa(m) => m.entropy_weight(step, total),
            _ => 0.0,
        }
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
