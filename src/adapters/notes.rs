//! Notes for the user on an adapter's config: parts that change nothing, or do otherwise
//! than they seem to.

use std::path::Path;

use super::{Adapter, AdapterKind, CONFIG_FILE, Kind};
use crate::nn::{ModuleId, Naming};

impl Adapter {
    /// Lines for the user on parts of a config that do otherwise than they seem to: a LoRA
    /// or FLoRA target on the classifier of a config that gives a new head (`num_labels`),
    /// which is trained in full with no adapter on it; a LoRA file whose `modules_to_save`
    /// names a module and one inside it, whose saved tensors are all used here (PEFT leaves
    /// some unused); and parts of a LoRA config that change nothing, which PEFT passes over
    /// too: `rank_pattern` and `alpha_pattern` keys that match no adapted module (under either
    /// naming), and `exclude_modules` that excludes none of the targeted modules (PEFT warns
    /// of that one).
    pub fn config_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let targets = match &self.config.kind {
            AdapterKind::Lora(c) => Some(&c.target_modules),
            AdapterKind::Flora(c) => Some(&c.target_modules),
            _ => None,
        };
        if let (Some(n), Some(targets)) = (self.config.num_labels, targets)
            && targets.matches(ModuleId::Classifier).is_some()
        {
            notes.push(format!(
                "target_modules names the classifier, which num_labels ({n}) makes a new head: it starts at zero \
                 and is trained in full (saved as in modules_to_save), with no adapter on it"
            ));
        }
        let (Kind::Lora(modules), AdapterKind::Lora(cfg)) = (&self.kind, &self.config.kind) else { return notes };
        if self.from_file && self.config.saves_nested(self.model.num_hidden_layers, self.lora_naming) {
            notes.push(
                "modules_to_save names a module and one inside it (`embeddings`: vit.embeddings and its \
                 patch_embeddings); PEFT wraps both, leaves some of their saved tensors unused and cannot load \
                 such a file again: here every saved tensor is used, so outputs may differ from those PEFT gave"
                    .into(),
            );
        }
        let paths: Vec<String> = modules.iter().flat_map(|m| Naming::BOTH.map(|n| m.module.path(n))).collect();
        let unused = cfg.patterns_matching_none(&paths).into_iter();
        notes.extend(
            unused.map(|(field, key)| format!("{field} key `{key}` matches no adapted module; it changes nothing")),
        );
        if let Some(ex) = &cfg.exclude_modules {
            let targeted = cfg.target_modules.resolve(self.model.num_hidden_layers, Path::new(CONFIG_FILE));
            if !targeted.unwrap_or_default().iter().any(|&(m, _)| ex.matches(m).is_some()) {
                notes.push(format!("exclude_modules {ex} excludes none of the modules target_modules names"));
            }
        }
        notes
    }
}
