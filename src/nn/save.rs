//! Saving a model folder (a merge): `model.safetensors` and `config.json` written atomically
//! as a pair, a sharded model they replace removed, and a save killed among its renames
//! finished by the next reader.

use std::path::{Path, PathBuf};

use super::shards::{INDEX_FILE, listed_shards};
use super::weights::{PROMPT_KEY, VitWeights};
use crate::error::Result;
use crate::io::safetensors::{self, HostTensor};
use crate::io::stamp;

/// The file that holds the weights of the model folder `dir`, for messages:
/// `model.safetensors`, else the index of a sharded model, else the folder.
pub fn weights_file(dir: &Path) -> PathBuf {
    [dir.join("model.safetensors"), dir.join(INDEX_FILE)].into_iter().find(|p| p.is_file()).unwrap_or(dir.into())
}

/// `__metadata__` key of a merged `model.safetensors` that replaced a sharded model: the
/// fingerprint of the index it replaced, whose shards it removes once in place.
const REPLACED_INDEX_KEY: &str = "peft_wgpu.replaced_index_fnv1a64";

/// Finishes a save of model folder `dir` (a merge) that was killed among its renames
/// (see [`stamp::finish_interrupted_pair`]): the new weights are kept with the config saved
/// with them, also in a new folder that has no `config.json` yet.
pub fn finish_interrupted_save(dir: &Path) {
    let (weights, config) = (dir.join("model.safetensors"), dir.join("config.json"));
    stamp::finish_interrupted_pair(&weights, &config);
    // A save that replaced a sharded model and was killed before it removed the shards: its
    // own pair is whole (the weights carry the config's fingerprint), and the index is the
    // one it replaced (its fingerprint too), so the index and the shards it lists are the old
    // model's, which a tool reading the index would load.
    let index = dir.join(INDEX_FILE);
    let Some(meta) = safetensors::header_metadata(&weights) else { return };
    let fingerprint_of = |path: &Path| std::fs::read(path).ok().map(|b| stamp::fingerprint(&b));
    let whole = meta.get(stamp::CONFIG_STAMP_KEY).is_some_and(|e| stamp::holds_config(&config, e));
    let replaced =
        index.is_file() && meta.get(REPLACED_INDEX_KEY).is_some_and(|e| fingerprint_of(&index).as_ref() == Some(e));
    if whole && replaced {
        for shard in listed_shards(dir) {
            let _ = std::fs::remove_file(dir.join(shard));
        }
        let _ = std::fs::remove_file(index);
    }
}

impl VitWeights {
    /// Writes `dir/model.safetensors` and `dir/config.json`: both to temporaries first, then
    /// renamed into place (see [`crate::io::atomic::write_all`]). Weights that fail
    /// [`VitWeights::check`] are refused before anything is written, so a saved folder loads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with_config(dir, self.config.to_json())
    }

    /// [`VitWeights::save`] with `config` as the text of `config.json` (e.g. the original
    /// model's config with new labels, [`super::VitConfig::to_json_over`]). A sharded model that
    /// `dir` held before (its index and the shards it lists) is removed once the new files
    /// are in place, so the folder holds one model.
    pub fn save_with_config(&self, dir: &Path, config: String) -> Result<()> {
        self.save_checked(dir, config, || Ok(()))
    }

    /// [`VitWeights::save_with_config`], running `check` under the folder's lock before
    /// anything is written (see [`crate::io::atomic::write_all_checked`]).
    pub(crate) fn save_checked(&self, dir: &Path, config: String, check: impl FnOnce() -> Result<()>) -> Result<()> {
        self.check()?;
        let mut list: Vec<(String, &HostTensor)> = self.tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
        if let Some(p) = &self.prompts {
            list.push((PROMPT_KEY.to_string(), p));
        }
        // The config's fingerprint ties the pair: a merge killed among its renames is
        // finished by the next reader (`load`).
        let mut meta = std::collections::HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (stamp::CONFIG_STAMP_KEY.to_string(), stamp::fingerprint(config.as_bytes())),
        ]);
        if !self.merged_adapters.is_empty() {
            meta.insert(stamp::MERGED_KEY.to_string(), self.merged_adapters.join(","));
        }
        // The sharded model this one replaces, for a reader to finish its removal.
        let index = dir.join(INDEX_FILE);
        if index.is_file()
            && let Ok(bytes) = std::fs::read(&index)
        {
            meta.insert(REPLACED_INDEX_KEY.to_string(), stamp::fingerprint(&bytes));
        }
        let weights_path = dir.join("model.safetensors");
        let weights = safetensors::serialize(&weights_path, &list, Some(meta))?;
        let files = [(weights_path, weights), (dir.join("config.json"), config.into_bytes())];
        crate::io::atomic::in_dir(dir, || {
            // Before this save clears temporaries: an earlier one killed among its renames.
            finish_interrupted_save(dir);
            // A sharded model this one replaces: its index and shards.
            let stale: Vec<PathBuf> = listed_shards(dir)
                .iter()
                .map(|s| dir.join(s))
                .chain(dir.join(INDEX_FILE).is_file().then(|| dir.join(INDEX_FILE)))
                .collect();
            crate::io::atomic::write_all_replacing(&files, &stale, check)
        })
    }
}
