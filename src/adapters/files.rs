//! An adapter's folder on disk: saving it (two files committed together) and finishing a
//! save that was killed among its renames.

use std::path::Path;

use super::params::PEFT_PREFIX;
use super::{Adapter, AdapterConfig, AdapterKind, CONFIG_FILE, Kind, Param, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::{self as st, HostTensor, TensorFile};
use crate::io::stamp;
use crate::nn::{ModuleId, Naming};

impl Adapter {
    /// Writes `dir/adapter_model.safetensors` and `dir/adapter_config.json` so that a failed
    /// or killed save never leaves a half-written file or destroys the previous adapter: both
    /// files are written to temporaries first, and only then renamed over the old ones,
    /// weights first (see [`crate::io::atomic::write_all`]). The weights carry a fingerprint
    /// of the config written with them, and the old config is moved aside before the renames,
    /// so no reader finds the new weights beside it: a kill among the renames (old weights
    /// and the old config aside, or new weights and the new config still under its temporary
    /// name) is undone or finished by the next reader ([`finish_interrupted_save`]), or
    /// refused when loaded where it cannot be finished; a config edited by hand after the
    /// save is read as it stands.
    ///
    /// A LoRA adapter is written in the naming of [`Adapter::lora_naming`] (transformers 5's
    /// unless it was read from a file in the on-disk naming): when any module is keyed by its
    /// path in the other naming, keys take that naming's paths and the config spells its
    /// modules out in them (`AdapterConfig::spelled_out`); so it does where PEFT would misread
    /// the config it saves again (`spell_out_for_peft`).
    pub fn save(&self, gpu: &Gpu, dir: &Path) -> Result<()> {
        self.save_checked(gpu, dir, || Ok(()))
    }

    /// [`Adapter::save`], running `check` under the folder's lock before anything is
    /// written, so that what it finds (no adapter in `dir`, say) holds until the save is in
    /// place; its error leaves the folder as it was.
    pub(crate) fn save_checked(&self, gpu: &Gpu, dir: &Path, check: impl FnOnce() -> Result<()>) -> Result<()> {
        let params: Vec<&Param> = self.trainable.iter().chain(&self.frozen).collect();
        let naming = self.lora_naming;
        let respelled: Vec<Option<String>> = params.iter().map(|p| respelled_key(&p.key, naming)).collect();
        let respell = matches!(self.kind, Kind::Lora(_)) && respelled.iter().any(Option::is_some);
        let mut host = Vec::new();
        for (p, new_key) in params.iter().zip(respelled) {
            let key = new_key.filter(|_| respell).unwrap_or_else(|| p.key.clone());
            host.push((key, HostTensor::new(p.tensor.shape().to_vec(), gpu.read(&p.tensor)?)?));
        }
        // An adapter `load` would refuse (a diverged run's) is not written.
        for (key, t) in &host {
            t.check_finite(|| format!("adapter tensor `{key}`"))?;
        }
        let list: Vec<(String, &HostTensor)> = host.iter().map(|(k, t)| (k.clone(), t)).collect();
        let config = match &self.kind {
            Kind::Lora(modules) if respell || self.spell_out_for_peft(modules) => {
                let adapted: Vec<_> = modules.iter().map(|m| (m.module, m.r, m.alpha)).collect();
                let saved: Vec<ModuleId> = self.saved.iter().filter(|s| !s.frozen).map(|s| s.module).collect();
                self.config.spelled_out(&adapted, &saved, self.embeddings.is_some(), naming)
            }
            _ => self.config.clone(),
        };
        let config = match &self.kind {
            Kind::Lora(_) if naming == Naming::OnDisk => config.without_unset_newer_fields(),
            _ => config,
        };
        let config = config.to_json().into_bytes();
        let mut meta = std::collections::HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (stamp::CONFIG_STAMP_KEY.to_string(), stamp::fingerprint(&config)),
        ]);
        meta.insert(MODEL_KEY.to_string(), architecture(&self.model));
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = st::serialize(&weights_path, &list, Some(meta))?;
        // Only now, with both files in memory, is the folder made; a failure leaves none.
        crate::io::atomic::in_dir(dir, || {
            // Before this save clears temporaries: an earlier one killed between its renames.
            finish_interrupted_save(dir);
            crate::io::atomic::write_all_checked(&[(weights_path, weights), (dir.join(CONFIG_FILE), config)], check)
        })
    }
}

impl Adapter {
    /// Whether PEFT would read this LoRA config otherwise than written after saving it again
    /// (targets that name an adapted module only in the on-disk naming, nested saved modules,
    /// overlapping rank or alpha patterns, exclusions and layer choices that may name modules
    /// in the other naming), so it is written with its modules spelled out.
    fn spell_out_for_peft(&self, modules: &[super::lora::LoraModule]) -> bool {
        let AdapterKind::Lora(lora) = &self.config.kind else { return false };
        // Exclusions and layer choices (with their `layers_pattern`, `layer` or `layers`) are
        // read here under both namings, by PEFT under transformers 5 in its own only: spelled
        // out, they need no reading.
        if lora.exclude_modules.is_some() || lora.layers_to_transform.is_some() {
            return true;
        }
        // Targets that miss an adapted module in the naming its key is written in (on-disk
        // names in a config given to `train --init` beside transformers-5 keys) would leave
        // PEFT, and this crate, without it.
        if modules.iter().any(|m| !lora.target_modules.matches_under(m.module, self.lora_naming)) {
            return true;
        }
        // Patterns that give a module another rank or alpha under the naming it is saved in
        // than it has (its targets name it in both namings, and its keys are respelled).
        let rank_alpha = lora.rank_alpha_lookup();
        if modules.iter().any(|m| rank_alpha(&m.module.path(self.lora_naming)) != (m.r, m.alpha)) {
            return true;
        }
        let paths: Vec<String> = modules.iter().flat_map(|m| Naming::BOTH.map(|n| m.module.path(n))).collect();
        self.config.saves_nested(self.model.num_hidden_layers, self.lora_naming)
            || lora.patterns_overlap(paths.iter().map(String::as_str))
    }
}

/// `key` (a file key `base_model.model.<module path>.<leaf>`) with its layer module's path
/// spelled in `naming`; `None` for a key already in it, or naming no layer module.
fn respelled_key(key: &str, naming: Naming) -> Option<String> {
    let path = key.strip_prefix(PEFT_PREFIX)?;
    let from = Naming::of_path(path).filter(|&n| n != naming)?;
    let layers = match from {
        Naming::OnDisk => path.strip_prefix("vit.encoder.layer.")?,
        Naming::Transformers5 => path.strip_prefix("vit.layers.")?,
    };
    let layer: usize = layers.split('.').next()?.parse().ok()?;
    path.match_indices('.').find_map(|(i, _)| match ModuleId::parse(&path[..i], layer + 1) {
        Some((module, n)) if n == from => Some(format!("{PEFT_PREFIX}{}{}", module.path(naming), &path[i..])),
        _ => None,
    })
}

/// Finishes a save of adapter folder `dir` that was killed among its renames (see
/// [`stamp::finish_interrupted_pair`]): the new weights are kept with the config saved with
/// them.
pub fn finish_interrupted_save(dir: &Path) {
    stamp::finish_interrupted_pair(&dir.join(WEIGHTS_FILE), &dir.join(CONFIG_FILE));
}

/// Readies adapter folder `dir` for reading, the same for every reader: finishes a save killed
/// between its renames, names a PyTorch pickle left where the weights go, requires the folder
/// with `required` in it (`what` says what it is for, in messages), and refuses a pipe or
/// device where its config or weights go.
pub(crate) fn check_folder(dir: &Path, what: &str, required: &str) -> Result<()> {
    finish_interrupted_save(dir);
    stamp::refuse_unfinished(&dir.join(WEIGHTS_FILE), &dir.join(CONFIG_FILE))?;
    crate::io::paths::refuse_pickle(dir, "adapter_model.bin", WEIGHTS_FILE)?;
    crate::io::paths::expect_dir(dir, what, required)?;
    crate::io::paths::refuse_special_files(dir, &[CONFIG_FILE, WEIGHTS_FILE])
}

/// Reads the config and the weights of adapter folder `dir` (readied by [`check_folder`];
/// `what` says what the folder is for, in messages), holding the folder's shared lock so that
/// both come from one save even while another process saves into it, and removing what
/// killed saves left there ([`stamp::remove_leftovers`]).
pub(crate) fn read_folder(dir: &Path, what: &str) -> Result<(AdapterConfig, TensorFile)> {
    let lock = crate::io::atomic::lock_shared(dir);
    check_folder(dir, what, CONFIG_FILE)?;
    if lock.is_some() {
        // No save is under way: temporaries are a killed one's.
        stamp::remove_leftovers(&dir.join(WEIGHTS_FILE), &dir.join(CONFIG_FILE));
    }
    crate::io::paths::expect_file(&dir.join(WEIGHTS_FILE), "the adapter's tensors")?;
    Ok((AdapterConfig::read(&dir.join(CONFIG_FILE))?, TensorFile::open(&dir.join(WEIGHTS_FILE))?))
}

/// Metadata key of the adapter's weights naming the architecture of the model it was made
/// for ([`architecture`]); PEFT ignores it, and files without it (PEFT's) are not checked.
const MODEL_KEY: &str = "peft_wgpu.model";

/// The parts of `model`'s architecture an adapter depends on, as `name=value` fields: all but
/// the image size (a backbone may be evaluated at another resolution) and the label count (a
/// head of its own replaces the model's).
fn architecture(model: &crate::nn::VitConfig) -> String {
    let [ph, pw] = model.patch_size;
    format!(
        "layers={} width={} heads={} mlp={} patch={ph}x{pw} channels={} qkv_bias={}",
        model.num_hidden_layers,
        model.hidden_size,
        model.num_attention_heads,
        model.intermediate_size,
        model.num_channels,
        model.qkv_bias
    )
}

/// Fails when `weights` says it was made for a model of another architecture than `model`,
/// naming each field that differs: its tensors may all fit (LoRA on `query` fits any layer
/// count and head count of one width) while it computes nonsense there. Fields only one
/// side knows are passed over, so notes written by other versions still compare.
pub(super) fn check_made_for(weights: &TensorFile, model: &crate::nn::VitConfig) -> Result<()> {
    let Some(made_for) = weights.metadata().get(MODEL_KEY) else { return Ok(()) };
    let fields = |text: &str| -> Vec<(String, String)> {
        text.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.chars().take(40).collect()))
            .collect()
    };
    let theirs = fields(made_for);
    let differ: Vec<String> = fields(&architecture(model))
        .into_iter()
        .filter_map(|(k, ours)| {
            let (_, v) = theirs.iter().find(|(t, _)| *t == k)?;
            (*v != ours).then(|| format!("{k} {v} there, {ours} here"))
        })
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::Format {
        path: weights.path().to_path_buf(),
        message: format!(
            "was made for a model of another architecture than this one ({}); an adapter works only with \
             the architecture it was trained on",
            differ.join(", ")
        ),
    })
}

/// When `weights` carries the fingerprint of the config saved with it and `config_path` is the
/// config beside it, refuses the pair only when the config saved with the weights still waits
/// under its temporary name: a save killed among its renames that the reader could not
/// finish ([`finish_interrupted_save`]; a read-only folder, say), so the config in place is an
/// older save's. Any other config that differs from the saved one was edited by hand (or
/// copied over) and is read as it stands, as PEFT reads it, whatever the files' times (a
/// copy, `touch` or `git checkout` reorders those). `config` is compared as it was read (a
/// save into the folder since then changes nothing here); a config made in memory is
/// compared with the file at `config_path`.
pub(super) fn check_pair(config: &AdapterConfig, config_path: &Path, weights: &TensorFile) -> Result<()> {
    let Some(expected) = weights.metadata().get(stamp::CONFIG_STAMP_KEY) else { return Ok(()) };
    if config_path.parent() != weights.path().parent() {
        return Ok(()); // a config given separately (`--adapter-config` with `--init`)
    }
    let read = match config.read_as() {
        Some(stamp) => stamp.clone(),
        None => stamp::ConfigStamp::read(config_path)?.1,
    };
    if &read.exact == expected {
        return Ok(());
    }
    let Some(pending) = stamp::pending_config(config_path, expected) else { return Ok(()) };
    Err(Error::Format {
        path: weights.path().to_path_buf(),
        message: format!(
            "was saved with another {CONFIG_FILE} than the one beside it: a save into this folder was \
             interrupted between its two files and could not be finished here; its config is `{}` (rename it \
             to {CONFIG_FILE} where the folder can be written, or train again)",
            pending.display()
        ),
    })
}
