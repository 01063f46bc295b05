//! The adapters: LoRA (exactly PEFT's), FLoRA, MoPPA and RLP, with saved modules, their
//! files (SPEC §9), binding onto a tape, and merging.
//!
//! An [`Adapter`] owns its tensors on the GPU, in a fixed order with their file keys. Each
//! step, [`Adapter::bind`] puts them on a tape as trainable leaves and returns a
//! [`BoundAdapter`], which the ViT consults through [`VitHooks`](crate::nn::VitHooks) at every point where an
//! adapter acts.

mod bound;
mod build;
pub mod config;
mod files;
pub mod flora;
mod flora_conv;
mod lora;
mod merge;
pub mod moppa;
mod notes;
mod params;
mod plan;
pub mod rlp;
mod saved;
mod source;

use std::path::{Path, PathBuf};

pub use bound::BoundAdapter;
pub(crate) use build::Build;
pub use config::{
    AdapterConfig, AdapterKind, FloraConfig, FloraRank, LoraBias, LoraConfig, LoraInit, MoppaConfig, PeftType,
    RlpConfig,
};
pub(crate) use files::check_folder as check_adapter_folder;
pub use files::finish_interrupted_save;
pub(crate) use files::read_folder as read_adapter_folder;
use files::{check_made_for, check_pair};
pub use params::{PEFT_PREFIX, Param};

use source::Source;

use crate::autograd::Tape;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::safetensors::TensorFile;
use crate::nn::{ModuleId, Naming, Vit, VitConfig};

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
    /// The config it was built from, read-only outside the crate ([`Adapter::config`]): its
    /// tensors and scales were made from it, and [`Adapter::save`] writes it beside them.
    pub(crate) config: AdapterConfig,
    trainable: Vec<Param>,
    frozen: Vec<Param>,
    kind: Kind,
    saved: Vec<saved::SavedModule>,
    /// Base-model biases trained with a LoRA adapter (PEFT's `bias`).
    biases: Vec<saved::TrainedBias>,
    embeddings: Option<saved::SavedEmbeddings>,
    num_labels: usize,
    base_parameters: usize,
    /// The architecture of the model it was made for.
    model: VitConfig,
    /// The `adapter_model.safetensors` it was read from (the bare file name for a new one),
    /// for messages about its values.
    weights_path: PathBuf,
    /// The naming a LoRA adapter's keys are saved in ([`Adapter::set_lora_naming`]).
    lora_naming: Naming,
    /// Whether it was read from a file, rather than made new.
    from_file: bool,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("config", &self.config.kind)
            .field("trainable", &self.trainable.iter().map(|p| (&p.key, p.tensor.shape())).collect::<Vec<_>>())
            .field("frozen", &self.frozen.iter().map(|p| (&p.key, p.tensor.shape())).collect::<Vec<_>>())
            .field("num_labels", &self.num_labels)
            .field("weights", &self.weights_path)
            .finish()
    }
}

impl Adapter {
    /// A freshly initialised adapter (SPEC's initialisations), seeded by `seed`.
    pub fn new(gpu: &Gpu, config: AdapterConfig, config_path: &Path, vit: &Vit, seed: u64) -> Result<Adapter> {
        Adapter::build(gpu, config, config_path, vit, Source::fresh(seed))
    }

    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors` (finishing a save
    /// that was killed among its renames first, see [`finish_interrupted_save`]).
    pub fn load(gpu: &Gpu, dir: &Path, vit: &Vit) -> Result<Adapter> {
        let config_path = dir.join(CONFIG_FILE);
        let (config, weights) = read_adapter_folder(dir, "an adapter folder")?;
        Adapter::from_file(gpu, config, &config_path, &weights, vit)
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

    /// An adapter with `config` whose tensors come from an opened `adapter_model.safetensors`
    /// ([`Adapter::from_file_seeded`] with seed 0).
    pub fn from_file(
        gpu: &Gpu,
        config: AdapterConfig,
        config_path: &Path,
        weights: &TensorFile,
        vit: &Vit,
    ) -> Result<Adapter> {
        Adapter::from_file_seeded(gpu, config, config_path, weights, vit, 0)
    }

    /// [`Adapter::from_file`], drawing from `seed` what the file leaves undetermined: only
    /// `A` of an RLP file in merged form (`prompt_embeddings` alone), which holds `P` but not
    /// how it splits; `train --init` passes its `--seed`.
    pub fn from_file_seeded(
        gpu: &Gpu,
        config: AdapterConfig,
        config_path: &Path,
        weights: &TensorFile,
        vit: &Vit,
        seed: u64,
    ) -> Result<Adapter> {
        check_pair(&config, config_path, weights)?;
        check_made_for(weights, &vit.config)?;
        Adapter::build(gpu, config, config_path, vit, Source::file(weights, config_path, seed))
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
                check_pair(&config, config_path, file)?;
                check_made_for(file, model)?;
                Source::file(file, config_path, 0)
            }
            None => Source::Shapes,
        };
        let max_bytes = (crate::gpu::MAX_TENSOR_BYTES, crate::gpu::MAX_TENSOR_LIMIT);
        Ok(plan::plan(config, config_path, model, source, max_bytes)?.num_labels)
    }

    fn build(gpu: &Gpu, config: AdapterConfig, config_path: &Path, vit: &Vit, source: Source<'_>) -> Result<Adapter> {
        gpu.check_owns("model weights", vit.weights().values())?;
        let max_bytes = gpu.max_tensor_bytes();
        let plan::Plan {
            config,
            mut kind,
            saved,
            biases,
            embeddings,
            num_labels,
            params,
            weights_path,
            file_naming,
            from_file,
        } = plan::plan(config, config_path, &vit.config, source, max_bytes)?;
        if let Kind::Moppa(m) = &mut kind {
            m.attach(gpu)?;
        }
        if let Kind::Rlp(r) = &kind {
            rlp::check_total(config_path, r.tokens, vit.merged_prompts())?;
        }
        let (trainable, frozen) = params.upload(gpu, vit.weights())?;
        Ok(Adapter {
            config,
            trainable,
            frozen,
            kind,
            saved,
            biases,
            embeddings,
            num_labels,
            base_parameters: vit.num_parameters(),
            model: vit.config.clone(),
            weights_path,
            lora_naming: file_naming.unwrap_or(Naming::Transformers5),
            from_file,
        })
    }

    /// Whether the adapter brings a classifier of its own (a saved `classifier`: read from
    /// its file, which must then hold it, or made new, zeros as a new head starts), which a
    /// model without one ([`crate::nn::Vit::headless`]) needs.
    pub fn has_own_head(&self) -> bool {
        self.saved.iter().any(|s| s.module == ModuleId::Classifier && !s.frozen)
    }

    /// The module naming a LoRA adapter's keys (and, where spelled out, its config's modules)
    /// are saved in: that of the file it was read from when all its layer keys use one
    /// (the PEFT that wrote or read that file reads it again), else transformers 5's, which
    /// PEFT ≥ 0.18 under transformers 5 reads; PEFT 0.17 under transformers 4 reads the
    /// on-disk naming only ([`Naming::OnDisk`]), and neither reads the other's.
    pub fn lora_naming(&self) -> Naming {
        self.lora_naming
    }

    /// Sets the naming [`Adapter::save`] writes a LoRA adapter's keys in (see
    /// [`Adapter::lora_naming`]); other adapter types keep their keys as they are.
    pub fn set_lora_naming(&mut self, naming: Naming) {
        self.lora_naming = naming;
    }

    /// The trainable tensors with their file keys, in a fixed order.
    pub fn trainable(&self) -> &[Param] {
        &self.trainable
    }

    /// The frozen tensors of the adapter (RLP's `P₀`).
    pub fn frozen(&self) -> &[Param] {
        &self.frozen
    }

    /// The config the adapter was built from (and is saved with).
    pub fn config(&self) -> &AdapterConfig {
        &self.config
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
    /// plus every adapter tensor, saved copies included; trained biases and the patch
    /// embedding a file stores by `save_embedding_layers` once, as PEFT loads both into the
    /// base model's own; with a new head, the base model's head counted at the new label
    /// count, as PEFT counts a base model loaded for the new task) and the percentage.
    pub fn trainable_summary(&self) -> String {
        let trainable = self.num_trainable();
        let biases: usize = self.biases.iter().map(|b| self.trainable[b.slot].tensor.len()).sum();
        let frozen: usize = self.frozen.iter().map(|p| p.tensor.len()).sum();
        let in_base: usize = self
            .saved
            .iter()
            .filter(|s| s.frozen)
            .flat_map(|s| std::iter::once(s.weight).chain(s.bias))
            .map(|slot| self.frozen[slot].tensor.len())
            .sum();
        // PEFT counts a model loaded for the new task, whose own head has the new label count.
        let head = |labels: usize| labels * (self.model.hidden_size + 1);
        let base = self.base_parameters - head(self.model.num_labels) + head(self.num_labels);
        let all = base + trainable + frozen - biases - in_base;
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
            part: None,
        }
    }

    /// Like [`Adapter::bind`], for a training step: LoRA's dropout is on, its masks drawn
    /// from `seed` (give every step its own).
    pub fn bind_train(&self, tape: &mut Tape, seed: u64) -> BoundAdapter<'_> {
        BoundAdapter { dropout_seed: Some(seed), ..self.bind(tape) }
    }

    /// Like [`Adapter::bind_train`], for a pass over images `part` of a step's batch (a batch
    /// computed in pieces): LoRA's dropout masks are the whole batch's over those images,
    /// so the pieces together draw what the batch at once would. The forward pass fails
    /// unless it computes `part.len()` images (so an empty or reversed range always fails).
    pub fn bind_train_part(&self, tape: &mut Tape, seed: u64, part: std::ops::Range<usize>) -> BoundAdapter<'_> {
        BoundAdapter { part: Some((part.start, part.len())), ..self.bind_train(tape, seed) }
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
