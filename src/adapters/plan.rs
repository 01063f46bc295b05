//! [`plan`]: what an adapter config makes of a model, worked out on the host before any
//! device work: every tensor's key and shape, and (unless a dry run) its values.

use std::path::{Path, PathBuf};

use super::build::{self, Build, Made};
use super::config::{AdapterConfig, AdapterKind, LoraBias};
use super::params::ParamBuilder;
use super::source::Source;
use super::{Kind, flora, lora, moppa, rlp, saved};
use crate::error::{Error, Result};
use crate::nn::{ModuleId, Naming, VitConfig};

/// An adapter worked out on the host: every tensor's key, shape and (unless a dry run) value.
pub(super) struct Plan {
    pub(super) config: AdapterConfig,
    pub(super) kind: Kind,
    pub(super) saved: Vec<saved::SavedModule>,
    pub(super) biases: Vec<saved::TrainedBias>,
    pub(super) embeddings: Option<saved::SavedEmbeddings>,
    pub(super) num_labels: usize,
    pub(super) params: ParamBuilder,
    pub(super) weights_path: PathBuf,
    /// The one naming the file's layer keys use, if read from such a file.
    pub(super) file_naming: Option<Naming>,
    pub(super) from_file: bool,
}

pub(super) fn plan(
    mut config: AdapterConfig,
    config_path: &Path,
    model: &VitConfig,
    source: Source<'_>,
    max_bytes: (u64, &'static str),
) -> Result<Plan> {
    model.check()?;
    config.check_values(config_path)?;
    config.check_pattern_costs(model.num_hidden_layers, config_path)?;
    if config.num_labels.is_some() && !config.saves_module(ModuleId::Classifier) {
        // A new head is a saved module, as in PEFT.
        config.modules_to_save.push("classifier".into());
    }
    // A file names its modules in the naming of the PEFT that wrote it: an entry such as
    // `output`, a module only under transformers 4's names, saved nothing under 5's.
    let file_namings = source.layer_namings();
    let file_naming = match file_namings[..] {
        [n] => Some(n),
        _ => None,
    };
    let namings = build::read_namings(&file_namings, &source);
    let saved: Vec<ModuleId> = ModuleId::all(model.num_hidden_layers)
        .into_iter()
        .filter(|&m| namings.iter().any(|&n| config.saves_module_under(m, n)))
        .collect();
    let no_module =
        |message: String| Error::Config { path: config_path.to_path_buf(), key: "modules_to_save".into(), message };
    // PEFT passes over an entry that matches nothing. A file it wrote loads the same here;
    // in a config for a new adapter such an entry is a mistake, which would otherwise
    // leave a module untrained without a word.
    if !source.is_file() {
        if saved.is_empty() && !config.saves_embeddings() && !config.modules_to_save.is_empty() {
            let entries = crate::error::list_excerpt(&config.modules_to_save);
            return Err(no_module(format!("{entries} matches no module of the model")));
        }
        if let Some(entry) = config.unmatched_saved_entry(model.num_hidden_layers) {
            return Err(no_module(format!("`{entry}` matches no module of the model that has weights")));
        }
        if let Some((entry, whole)) = config.partial_saved_entry(model.num_hidden_layers) {
            return Err(no_module(format!(
                "`{entry}` ends a module's name partway (PEFT would save `{whole}` but still adapt \
                 modules inside it); write whole names, as `{whole}`"
            )));
        }
    }
    let preferred = match &config.kind {
        AdapterKind::Lora(c) => AdapterConfig::preferred_naming(&c.target_modules, model.num_hidden_layers),
        AdapterKind::Flora(c) => AdapterConfig::preferred_naming(&c.target_modules, model.num_hidden_layers),
        _ => Naming::OnDisk,
    };
    let mut b = Build {
        model,
        config_path,
        saved,
        preferred,
        file_namings,
        source,
        params: ParamBuilder::default(),
        max_bytes,
        made: Made::default(),
    };
    let kind = match &config.kind {
        AdapterKind::Lora(c) => Kind::Lora(lora::build(c, &mut b)?),
        AdapterKind::Flora(c) => Kind::Flora(flora::build(c, &mut b)?),
        AdapterKind::Moppa(c) => Kind::Moppa(moppa::build(c, &mut b)?),
        AdapterKind::Rlp(c) => Kind::Rlp(rlp::build(c, &mut b)?),
    };
    let saved_modules = b.saved.clone();
    let saves_under = |m: ModuleId, n: Naming| namings.contains(&n) && config.saves_module_under(m, n);
    let (mut saved, num_labels) = saved::build(&saved_modules, saves_under, config.num_labels, &mut b)?;
    let mut biases = Vec::new();
    if let (Kind::Lora(modules), AdapterKind::Lora(c)) = (&kind, &config.kind) {
        saved.extend(saved::embedding_from_file(&saved, c.bias == LoraBias::All, &mut b)?);
        biases = saved::biases(c.bias, modules, &saved, &mut b)?;
    }
    let embeddings = config.saves_embeddings().then(|| saved::embeddings(&mut b)).transpose()?;
    let (weights_path, from_file) = (b.weights_path(), b.is_file());
    let Build { source, params, .. } = b;
    source.finish()?;
    Ok(Plan { config, kind, saved, biases, embeddings, num_labels, params, weights_path, file_naming, from_file })
}
