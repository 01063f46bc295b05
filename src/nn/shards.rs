//! A model folder's weight files: `model.safetensors`, or the shards its index lists, each
//! tensor in one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::json::JsonFile;
use crate::io::safetensors::TensorFile;

/// The index of a sharded model's weights.
pub(super) const INDEX_FILE: &str = "model.safetensors.index.json";

/// The shard files `dir`'s index lists (`.safetensors` file names inside `dir`, other than
/// `model.safetensors`; none without an index or with an index that cannot be read). Only
/// such names are ever removed, so an index that lists other files (`config.json`) costs
/// nothing but itself.
pub(super) fn listed_shards(dir: &Path) -> Vec<String> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Vec::new(); // none, or a pipe or device that reading could block on
    }
    let Ok(index) = JsonFile::read(&path) else { return Vec::new() };
    let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else { return Vec::new() };
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str())
        // Compared without case: on macOS and Windows `Model.safetensors` is the file just written.
        .filter(|f| is_file_name(f) && f.ends_with(".safetensors") && !f.eq_ignore_ascii_case("model.safetensors"))
        .map(str::to_string)
        .collect();
    shards.sort();
    shards.dedup();
    shards
}

/// Whether `name` names a file inside the folder and nothing else: one plain path component
/// (no `/`, `\`, `..` or `.`), and no `:` (on Windows `C:x` leaves the folder for drive C's
/// current one, and `a:b` names a stream of file `a`).
fn is_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(p)), None) if p == name)
        && !name.contains([':', '/', '\\'])
        && !(cfg!(windows) && crate::io::atomic::names_windows_device(Path::new(name)))
}

/// A weights file of `dir` saved under a transformers `variant` (`model.fp16.safetensors`,
/// `model.safetensors.index.fp16.json`), for the message when the plain name is missing.
fn variant_file(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let plain = n == "model.safetensors" || n == INDEX_FILE;
            !plain
                && ((n.starts_with("model.") && n.ends_with(".safetensors"))
                    || n.starts_with("model.safetensors.index."))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The safetensors files of a model folder, `model.safetensors` or the shards listed by
/// `model.safetensors.index.json`, with the index's placement of each key (a position in
/// the files; empty for a single file). Before any is read, the files' bytes and `copies`
/// (their tensors in f32) are checked against the memory this process can still get.
pub(super) fn weight_files(dir: &Path, copies: u64) -> Result<(Vec<TensorFile>, BTreeMap<String, usize>)> {
    // A name present at all (a link that leads nowhere or in a loop too) is opened, so that
    // its own error is told.
    let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let single = dir.join("model.safetensors");
    if present(&single) {
        check_memory(&single, "it", std::slice::from_ref(&single), copies)?;
        return Ok((vec![TensorFile::open(&single)?], BTreeMap::new()));
    }
    let index_path = dir.join(INDEX_FILE);
    if !present(&index_path) {
        crate::io::paths::refuse_pickle(dir, "pytorch_model.bin", "model.safetensors")?;
        crate::io::paths::refuse_pickle(dir, "pytorch_model.bin.index.json", INDEX_FILE)?;
        // Weights of the other frameworks transformers saves for.
        for other in ["tf_model.h5", "flax_model.msgpack", "tf_model.h5.index.json", "flax_model.msgpack.index.json"] {
            if dir.join(other).is_file() {
                let message = "holds TensorFlow or Flax weights, which this crate does not read; load them in \
                               transformers and save them as model.safetensors (`save_pretrained(dir)`)";
                return Err(Error::Format { path: dir.join(other), message: message.into() });
            }
        }
        let mut message = "no model.safetensors or model.safetensors.index.json in the model folder".to_string();
        if let Some(variant) = variant_file(dir) {
            message +=
                &format!(" (it has `{variant}`, saved with a `variant`: rename it, or its index, to the plain name)");
        }
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, message);
        return Err(Error::Io { path: single, source });
    }
    crate::io::paths::refuse_special_files(dir, &[INDEX_FILE])?;
    let index = JsonFile::read(&index_path)?;
    let map = index.require("weight_map")?.as_object().ok_or_else(|| index.error("weight_map", "must be an object"))?;
    let mut entries: Vec<(&String, &str)> = Vec::new();
    for (key, file) in map {
        let file =
            file.as_str().ok_or_else(|| index.error("weight_map", format!("entry `{key}` must be a file name")))?;
        if !is_file_name(file) {
            return Err(index.error("weight_map", format!("entry `{key}` names no file in the model folder: `{file}`")));
        }
        entries.push((key, file));
    }
    let mut shards: Vec<&str> = entries.iter().map(|&(_, f)| f).collect();
    shards.sort();
    shards.dedup();
    let placed = entries.iter().map(|&(k, f)| (k.clone(), shards.binary_search(&f).unwrap_or(0))).collect();
    crate::io::paths::refuse_special_files(dir, &shards)?;
    check_memory(&index_path, "its shards", &shards.iter().map(|s| dir.join(s)).collect::<Vec<_>>(), copies)?;
    let files = shards.iter().map(|s| TensorFile::open(&dir.join(s))).collect::<Result<Vec<_>>>()?;
    // One tensor in two shards (a re-shard cut short, say) makes two models of one folder:
    // the index names one copy, transformers reads whichever shard it loads last.
    let mut holder: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        for key in file.keys() {
            if let Some(first) = holder.insert(key, i) {
                return Err(index.error(
                    "weight_map",
                    format!(
                        "tensor `{key}` is in both {} and {}; each tensor must be in one shard",
                        shards[first], shards[i]
                    ),
                ));
            }
        }
    }
    Ok((files, placed))
}

/// Fails, naming `blamed`, when reading `files` (`what` they are to it; those that are
/// regular files, the others are left to their readers) and holding their tensors in f32
/// need more memory than this process can still get: a model too large is refused before
/// it is read. The tensors count as `copies` bytes (what the config implies), or as four
/// times the files' bytes where that is less (no dtype is narrower than 8 bits), so that a
/// config whose sizes the files do not hold is refused by the shape check that follows.
fn check_memory(blamed: &Path, what: &str, files: &[PathBuf], copies: u64) -> Result<()> {
    let read = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(std::fs::Metadata::is_file)
        .fold(0u64, |sum, m| sum.saturating_add(m.len()));
    crate::io::memory::check_loadable(blamed, what, read, copies.min(read.saturating_mul(4)))
}
