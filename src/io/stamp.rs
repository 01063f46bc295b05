//! A fingerprint that ties files written together: an adapter's (or a merged model's)
//! weights carry the fingerprint of the config written with them, so a save killed between
//! its two renames is finished by the next reader ([`finish_interrupted_pair`]), or, where
//! it cannot be, the adapter is refused when read instead of being used with the old config.

use std::path::Path;

/// `__metadata__` key of `adapter_model.safetensors` (and of a merged `model.safetensors`)
/// holding the config's fingerprint.
pub const CONFIG_STAMP_KEY: &str = "peft_wgpu.config_fnv1a64";

/// `__metadata__` key of a merged `model.safetensors` listing the adapters folded into it:
/// the fingerprints of their weight files ([`fingerprint`] of the bytes of
/// `adapter_model.safetensors`), comma-separated, oldest first. `eval`, `train --init` and
/// `merge` refuse an adapter whose weights file is listed (byte for byte the same), which
/// would count it twice.
pub const MERGED_KEY: &str = "peft_wgpu.merged_adapters_fnv1a64";

/// Finishes a save of `weights` and `config` that was killed among its renames. The
/// writers ([`super::atomic::write_all`]) move the old config aside (`.NAME.old-PID`), then
/// rename the new weights into place (the commit point), then the new config. A kill after
/// the commit point leaves the new weights with no config beside them and the new config
/// under its temporary name (`.NAME.tmp-PID`): when the weights' config fingerprint matches
/// such a temporary, it is renamed into place. A kill before it leaves the old weights with
/// their config aside and the new weights under their temporary name: that config (the one
/// the same writer moved aside, or the one whose fingerprint the weights carry) is put back,
/// never over a config that is there. Either way the folder holds one save's pair whole
/// again (also for other readers, PEFT or transformers). What cannot be done (a read-only
/// folder, a choice the files do not settle) is left as it is, for the readers' own checks to
/// report.
///
/// It holds the folder's shared lock, so no save is under way meanwhile (writers hold it
/// exclusively from their first temporary to their last rename); where the folder cannot be
/// locked, the files of a writer that may still run are left alone (only Linux's `/proc`
/// tells which have ended).
pub fn finish_interrupted_pair(weights: &Path, config: &Path) {
    // Pipes and devices are neither opened (they may block) nor replaced: no saved pair.
    if (weights.exists() && !weights.is_file()) || (config.exists() && !config.is_file()) {
        return;
    }
    let dir = weights.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return;
    }
    let lock = super::atomic::lock_shared(dir);
    let settled = |p: &std::path::PathBuf| lock.is_some() || super::atomic::writer_ended(p);
    let expected = if weights.is_file() {
        super::safetensors::header_metadata(weights).and_then(|m| m.get(CONFIG_STAMP_KEY).cloned())
    } else {
        None
    };
    if let Some(expected) = &expected {
        if holds_config(config, expected) {
            // The config in place is already the one saved with the weights (the new config
            // was the same as the old): a temporary of it is only a leftover.
            for tmp in pending_configs(config, expected).filter(settled) {
                let _ = std::fs::remove_file(tmp);
            }
            return;
        }
        if let Some(tmp) = pending_configs(config, expected).find(settled) {
            let _ = super::atomic::finish_rename(&tmp, config);
            return;
        }
    }
    if !config.exists() {
        // Killed before its commit point: the weights in place are the old ones. The config
        // to put back is the one moved aside by the writer whose weights still wait under
        // their temporary name, or else the one saved with the weights in place.
        let asides: Vec<_> = super::atomic::stale_asides(config).into_iter().filter(settled).collect();
        let waiting: Vec<String> =
            super::atomic::stale_temps(weights).iter().filter_map(|t| super::atomic::writer_of(t)).collect();
        let by_writer = asides.iter().find(|a| super::atomic::writer_of(a).is_some_and(|w| waiting.contains(&w)));
        let by_stamp = asides.iter().find(|old| expected.as_ref().is_some_and(|e| holds_config(old, e)));
        if let Some(old) = by_writer.or(by_stamp) {
            put_back(old, config);
        }
    }
}

/// Puts the config moved aside to `old` back in place at `config`, unless a config is there
/// by now (a hard link refuses to replace one; where the file system has none, a rename
/// after a check).
fn put_back(old: &Path, config: &Path) {
    match std::fs::hard_link(old, config) {
        Ok(()) => {
            let _ = std::fs::remove_file(old);
            if let Some(dir) = config.parent() {
                super::atomic::sync_dir(dir);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) if !config.exists() => {
            let _ = super::atomic::finish_rename(old, config);
        }
        Err(_) => {}
    }
}

/// Fails when `config` is missing because a save killed among its renames left it waiting
/// under another name that [`finish_interrupted_pair`] could not rename (a read-only folder):
/// the new config under its temporary name, or the old one moved aside. The error names that
/// file and how to finish by hand.
pub(crate) fn refuse_unfinished(weights: &Path, config: &Path) -> crate::error::Result<()> {
    if config.exists() {
        return Ok(());
    }
    let expected = super::safetensors::header_metadata(weights).and_then(|m| m.get(CONFIG_STAMP_KEY).cloned());
    let waiting = expected
        .and_then(|e| pending_config(config, &e))
        .or_else(|| super::atomic::stale_asides(config).into_iter().next());
    let Some(waiting) = waiting else { return Ok(()) };
    let name = config.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Err(crate::error::Error::Format {
        path: config.to_path_buf(),
        message: format!(
            "is missing: a save into this folder was interrupted among its renames and could not be finished \
             here; its config is `{}` (rename it to {name} where the folder can be written)",
            waiting.display()
        ),
    })
}

/// Removes what killed saves left beside `weights` and `config`, for a reader that holds the
/// folder's shared lock (so no save into it is under way, every writer holding the exclusive
/// lock from its first temporary to its last rename): temporaries of the weights (a save that
/// never reached its commit point), of the config unless it is the one saved with the
/// weights in place, which [`finish_interrupted_pair`] could not rename (kept, for the error
/// that names it), and old configs moved aside once a config is in place (whatever their
/// writer, which only Linux could tell: under the lock none is at work).
///
/// A writer whose own lock failed (a file system without locks for it) writes unlocked, so
/// only temporaries whose writing process has ended are removed, which only Linux's `/proc`
/// tells; elsewhere they stay for the next save.
pub fn remove_leftovers(weights: &Path, config: &Path) {
    let expected = super::safetensors::header_metadata(weights).and_then(|m| m.get(CONFIG_STAMP_KEY).cloned());
    let waiting = expected.and_then(|e| pending_config(config, &e));
    let temps = super::atomic::stale_temps(weights).into_iter().chain(super::atomic::stale_temps(config));
    for tmp in temps.filter(|t| Some(t) != waiting.as_ref() && super::atomic::writer_ended(t)) {
        let _ = std::fs::remove_file(tmp);
    }
    // An old config moved aside is a leftover once a config is in place again: under the
    // lock no save is under way, and each removes its own before it lets go.
    if config.is_file() {
        for old in super::atomic::stale_asides(config) {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// The temporaries a killed save left for `config` (`.NAME.tmp-PID` beside it) whose bytes
/// have fingerprint `expected`: the config saved with the weights that carry it.
fn pending_configs(config: &Path, expected: &str) -> impl Iterator<Item = std::path::PathBuf> {
    let expected = expected.to_string();
    super::atomic::stale_temps(config).into_iter().filter(move |tmp| holds_config(tmp, &expected))
}

/// Whether `path` is a config file whose bytes have fingerprint `expected`: the config saved
/// with the weights that carry it.
pub(crate) fn holds_config(path: &Path, expected: &str) -> bool {
    path.is_file() && super::json::read_config_bytes(path).is_ok_and(|b| fingerprint(&b) == expected)
}

/// The first of [`pending_configs`].
pub(crate) fn pending_config(config: &Path, expected: &str) -> Option<std::path::PathBuf> {
    pending_configs(config, expected).next()
}

/// A config file as it was read, for checking it against the weights read beside it: the
/// fingerprint of its bytes ([`fingerprint`]).
#[derive(Clone, Debug)]
pub(crate) struct ConfigStamp {
    pub(crate) exact: String,
}

impl ConfigStamp {
    /// The stamp of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> ConfigStamp {
        ConfigStamp { exact: fingerprint(bytes) }
    }

    /// The bytes of the config file `path` as it is now, with their stamp.
    pub(crate) fn read(path: &Path) -> crate::error::Result<(Vec<u8>, ConfigStamp)> {
        let bytes = super::json::read_config_bytes(path)?;
        let stamp = ConfigStamp::of(&bytes);
        Ok((bytes, stamp))
    }
}

/// 64-bit FNV-1a of `bytes` as 16 hex digits: stable across platforms and Rust versions.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::fingerprint;

    /// An empty scratch folder `peft-wgpu-NAME-PID` in the temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("peft-wgpu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test file");
        dir
    }

    /// Writes a one-tensor weights file at `path` carrying the fingerprint of `config`.
    fn stamped_weights(path: &Path, config: &[u8]) {
        use crate::io::safetensors::{HostTensor, serialize};
        let t = HostTensor::new(vec![1], vec![1.0]).expect("test file");
        let meta = std::collections::HashMap::from([(super::CONFIG_STAMP_KEY.to_string(), fingerprint(config))]);
        std::fs::write(path, serialize(path, &[("t".into(), &t)], Some(meta)).expect("test file")).expect("test file");
    }

    /// A save killed between its renames is finished; a leftover temporary of the config
    /// already in place is removed; a temporary of another config is left alone.
    #[test]
    fn interrupted_pairs_are_finished_and_leftovers_removed() {
        let dir = scratch("stamp");
        let (weights, config) = (dir.join("w.safetensors"), dir.join("c.json"));
        stamped_weights(&weights, b"new");
        let tmp = |pid: u32| dir.join(format!(".c.json.tmp-{pid}"));
        std::fs::write(&config, b"old").expect("test file");
        std::fs::write(tmp(11), b"other").expect("test file");
        std::fs::write(tmp(12), b"new").expect("test file");
        super::finish_interrupted_pair(&weights, &config);
        assert_eq!(std::fs::read(&config).expect("test file"), b"new");
        assert!(!tmp(12).exists() && tmp(11).exists());
        std::fs::write(tmp(13), b"new").expect("test file");
        super::finish_interrupted_pair(&weights, &config);
        assert!(!tmp(13).exists(), "a leftover copy of the config in place is removed");
        assert!(tmp(11).exists(), "another config's temporary is not this reader's to remove");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The states a save leaves when killed among its renames, the old config moved aside
    /// first: before the commit point (old weights, no config) the old config is put back;
    /// after it (new weights, no config) the new one is renamed into place, and the old one
    /// aside is then a leftover that `remove_leftovers` removes.
    #[test]
    fn a_config_moved_aside_is_put_back_or_replaced() {
        let dir = scratch("aside");
        let (weights, config) = (dir.join("w.safetensors"), dir.join("c.json"));
        let weights_for = |stamp: &[u8]| stamped_weights(&weights, stamp);
        // A process id above Linux's largest: a writer that has ended.
        let (aside, tmp) = (dir.join(".c.json.old-4294967"), dir.join(".c.json.tmp-4294967"));
        // Before the commit point.
        weights_for(b"old");
        std::fs::write(&aside, b"old").expect("test file");
        std::fs::write(&tmp, b"new").expect("test file");
        // Where it could not be put back (a read-only folder), the reader names it.
        let e = super::refuse_unfinished(&weights, &config).expect_err("no config").to_string();
        assert!(e.contains("interrupted") && e.contains(".c.json.old-4294967"), "{e}");
        super::finish_interrupted_pair(&weights, &config);
        assert_eq!(std::fs::read(&config).expect("put back"), b"old");
        super::refuse_unfinished(&weights, &config).expect("a config in place");
        assert!(!aside.exists());
        super::remove_leftovers(&weights, &config);
        assert!(!tmp.exists(), "the unfinished save's temporary is removed");
        // After it.
        std::fs::remove_file(&config).expect("test file");
        weights_for(b"new");
        std::fs::write(&aside, b"old").expect("test file");
        std::fs::write(&tmp, b"new").expect("test file");
        let e = super::refuse_unfinished(&weights, &config).expect_err("no config").to_string();
        assert!(e.contains(".c.json.tmp-4294967"), "the new config, saved with the weights: {e}");
        super::finish_interrupted_pair(&weights, &config);
        assert_eq!(std::fs::read(&config).expect("finished"), b"new");
        assert!(aside.exists() && !tmp.exists());
        super::remove_leftovers(&weights, &config);
        assert!(!aside.exists(), "the old config aside is a leftover once the new one is in place");
        // Weights PEFT wrote (no fingerprint), killed before the commit point: the writer's
        // weights, still under their temporary name, tell which aside is its.
        std::fs::write(&weights, b"not ours").expect("test file");
        std::fs::rename(&config, &aside).expect("test file");
        let other = dir.join(".c.json.old-4294966");
        std::fs::write(&other, b"older").expect("test file");
        super::finish_interrupted_pair(&weights, &config);
        assert!(!config.exists(), "two asides, nothing to tell them apart: none is put back");
        super::refuse_unfinished(&weights, &config).expect_err("no config");
        let weights_tmp = dir.join(".w.safetensors.tmp-4294967");
        std::fs::write(&weights_tmp, b"newer weights").expect("test file");
        super::finish_interrupted_pair(&weights, &config);
        assert_eq!(std::fs::read(&config).expect("put back"), b"new", "the aside of the writer that left its weights");
        // Never over a config that is there.
        std::fs::write(&aside, b"stale").expect("test file");
        std::fs::remove_file(&weights_tmp).expect("test file");
        super::finish_interrupted_pair(&weights, &config);
        assert_eq!(std::fs::read(&config).expect("kept"), b"new");
        super::remove_leftovers(&weights, &config);
        assert!(!aside.exists() && !other.exists(), "asides are leftovers once a config is in place");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fnv1a_matches_published_values() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fingerprint(b"foobar"), "85944171f73967e8");
    }
}
