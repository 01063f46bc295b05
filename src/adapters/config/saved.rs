//! `modules_to_save` as PEFT reads it: which modules an entry saves (a module whose path,
//! or the path of a module above it, ends with the entry), and which entries a new config may
//! not hold.

use serde_json::Value;

use super::AdapterConfig;
use crate::nn::{ModuleId, Naming};

/// The ViT's embeddings module, which holds `cls_token` and `position_embeddings` itself.
pub(crate) const EMBEDDINGS: &str = "vit.embeddings";

/// Whether `entry` of `modules_to_save` names the module at `path` or one holding it: as
/// PEFT matches them, the module's path, or a path above it, ends with `entry`.
fn names_within(entry: &str, path: &str) -> bool {
    holders(path).any(|p| p.ends_with(entry))
}

/// `path` and the paths of the modules above it (`vit.layers.0.mlp`, `vit.layers.0`, …).
fn holders(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('.').map(|(i, _)| &path[..i]).chain([path])
}

/// Whether `entry` is `path` or its end after a dot: a whole module name, or several.
fn names_whole(entry: &str, path: &str) -> bool {
    path == entry || path.strip_suffix(entry).is_some_and(|head| head.ends_with('.'))
}

/// Every module path of a ViT of `layers` layers under `namings` that holds weights itself
/// or holds modules that do, with the embeddings module; sorted, each once.
fn holder_paths(layers: usize, namings: &[Naming]) -> Vec<String> {
    let leaves = ModuleId::all(layers).into_iter().flat_map(|m| namings.iter().map(move |&n| m.path(n)));
    let mut paths: Vec<String> =
        leaves.flat_map(|leaf| holders(&leaf).map(str::to_string).collect::<Vec<_>>()).collect();
    paths.push(EMBEDDINGS.to_string());
    paths.sort_unstable();
    paths.dedup();
    paths
}

impl AdapterConfig {
    /// Whether `module` is saved: PEFT saves every module whose path ends with an entry of
    /// `modules_to_save`, and everything inside it, so `module` is saved when its own path or
    /// the path of a module holding it (`vit.layers.0.mlp` for `fc1`) ends with one.
    pub fn saves_module(&self, module: ModuleId) -> bool {
        Naming::BOTH.into_iter().any(|n| self.saves_module_under(module, n))
    }

    /// Whether one of `modules_to_save` names `module`, or a module holding it, by its path
    /// under `naming`.
    pub fn saves_module_under(&self, module: ModuleId, naming: Naming) -> bool {
        self.saves_within(&module.path(naming))
    }

    /// Whether the tensors the embeddings module holds itself (`vit.embeddings.cls_token` and
    /// `position_embeddings`) are saved: `modules_to_save` names `vit.embeddings` or `vit`.
    pub fn saves_embeddings(&self) -> bool {
        self.saves_within(EMBEDDINGS)
    }

    /// Whether an entry of `modules_to_save` names two modules of which one holds the other
    /// under `naming`, the one the file is written in (`embeddings`: `vit.embeddings` and its
    /// `patch_embeddings`; on disk, `attention` and the `attention.attention` inside it).
    /// PEFT then wraps both, saves two tensors under one key and cannot load its own file,
    /// so such a config is written with the saved modules spelled out.
    pub(crate) fn saves_nested(&self, layers: usize, naming: Naming) -> bool {
        let paths = holder_paths(layers, &[naming]);
        self.modules_to_save.iter().any(|m| {
            let named: Vec<&String> = paths.iter().filter(|p| p.ends_with(m.as_str())).collect();
            named.iter().any(|outer| {
                named.iter().any(|inner| inner.strip_prefix(outer.as_str()).is_some_and(|r| r.starts_with('.')))
            })
        })
    }

    /// Whether an entry names the module at `path` or one above it.
    fn saves_within(&self, path: &str) -> bool {
        self.modules_to_save.iter().any(|m| names_within(m, path))
    }

    /// The first entry of `modules_to_save` that names no module with weights of a model of
    /// `layers` layers, under either naming; `score`, which PEFT adds for `SEQ_CLS` (the head
    /// of other architectures), is not looked at.
    pub fn unmatched_saved_entry(&self, layers: usize) -> Option<&str> {
        let paths = holder_paths(layers, &Naming::BOTH);
        let seq_cls = self.raw.get("task_type").and_then(Value::as_str) == Some("SEQ_CLS");
        self.modules_to_save
            .iter()
            .filter(|m| !(seq_cls && m.as_str() == "score"))
            .find(|m| !paths.iter().any(|p| p.ends_with(m.as_str())))
            .map(String::as_str)
    }

    /// An entry of `modules_to_save` that ends some module's path partway through a name
    /// (`ayers.1` for `vit.layers.1`), with the whole-name suffix to write instead. PEFT
    /// saves such a module (it compares plain string ends) but still adapts the modules
    /// inside it (it excludes targets at dot boundaries only), and then cannot load its
    /// own file, so a new config may not have one.
    pub fn partial_saved_entry(&self, layers: usize) -> Option<(&str, String)> {
        let paths = holder_paths(layers, &Naming::BOTH);
        self.modules_to_save.iter().find_map(|entry| {
            // A module it names only partway, with no module above it named whole (as
            // `vit.embeddings` holds `patch_embeddings` for `embeddings`).
            let partial =
                paths.iter().find(|p| p.ends_with(entry.as_str()) && !holders(p).any(|h| names_whole(entry, h)))?;
            // The shortest whole-name end of that path holding the entry.
            let whole = std::iter::once(0)
                .chain(partial.match_indices('.').map(|(i, _)| i + 1))
                .map(|i| &partial[i..])
                .rev()
                .find(|tail| tail.len() > entry.len())
                .unwrap_or(partial);
            Some((entry.as_str(), whole.to_string()))
        })
    }
}
