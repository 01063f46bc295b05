//! A fingerprint that ties files written together: an adapter's (or a merged model's)
//! weights carry the fingerprint of the config written with them, so a save killed between
//! its two renames is finished by the next reader ([`finish_interrupted_pair`]), and an
//! adapter pair mixed any other way is refused when read instead of being used.

use std::path::Path;

/// `__metadata__` key of `adapter_model.safetensors` (and of a merged `model.safetensors`)
/// holding the config's fingerprint.
pub const CONFIG_STAMP_KEY: &str = "peft_wgpu.config_fnv1a64";

/// `__metadata__` key holding the fingerprint of what the config means
/// ([`meaning_fingerprint`]), so that a config edited only in its informational fields, or
/// reformatted, still belongs to its weights wherever the folder is copied.
pub const MEANING_STAMP_KEY: &str = "peft_wgpu.config_meaning_fnv1a64";

/// `__metadata__` key of a merged `model.safetensors` listing the adapters folded into it:
/// the fingerprints of their weight files ([`fingerprint`] of the bytes of
/// `adapter_model.safetensors`), comma-separated, oldest first. `eval`, `train --init` and
/// `merge` refuse an adapter whose weights file is listed (byte for byte the same), which
/// would count it twice.
pub const MERGED_KEY: &str = "peft_wgpu.merged_adapters_fnv1a64";

/// Config fields that describe where an adapter came from, not what it computes.
const INFORMATIONAL: [&str; 6] =
    ["base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping", "task_type"];

/// The fingerprint of a JSON config's meaning: its fields other than the informational ones,
/// with keys sorted and no whitespace. `None` when `bytes` is not a JSON object.
pub fn meaning_fingerprint(bytes: &[u8]) -> Option<String> {
    let serde_json::Value::Object(mut o) = serde_json::from_slice(super::json::without_bom(bytes)).ok()? else {
        return None;
    };
    for key in INFORMATIONAL {
        o.remove(key);
    }
    let mut text = String::new();
    canonical(&serde_json::Value::Object(o), &mut text);
    Some(fingerprint(text.as_bytes()))
}

/// `v` as compact JSON with object keys in sorted order.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&o[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Finishes a save of `weights` and `config` that was killed between its two renames. The
/// writers ([`super::atomic::write_all`]) rename the weights first (the commit point) and the
/// config second; a kill in between leaves the new weights beside the old config and the new
/// config under its temporary name (`.NAME.tmp-PID`). When the weights' config fingerprint
/// does not match the config beside them but matches such a temporary, that temporary is
/// renamed into place, so the folder holds the new pair whole (also for other readers, PEFT
/// or transformers). What cannot be done (a read-only folder, another process that finished
/// first) is left as it is, for the readers' own checks to report.
pub fn finish_interrupted_pair(weights: &Path, config: &Path) {
    // Pipes and devices are neither opened (they may block) nor replaced: no saved pair.
    if !weights.is_file() || (config.exists() && !config.is_file()) {
        return;
    }
    let Some(expected) = super::safetensors::header_metadata(weights).and_then(|m| m.get(CONFIG_STAMP_KEY).cloned())
    else {
        return;
    };
    let matches =
        |path: &Path| path.is_file() && super::json::read_config_bytes(path).is_ok_and(|b| fingerprint(&b) == expected);
    let pending = super::atomic::stale_temps(config).into_iter().filter(|tmp| matches(tmp));
    if matches(config) {
        // The config in place is already the one saved with the weights (the new config was
        // the same as the old): a temporary of it is only a leftover.
        for tmp in pending {
            let _ = std::fs::remove_file(tmp);
        }
        return;
    }
    if let Some(tmp) = pending.into_iter().next() {
        let _ = super::atomic::finish_rename(&tmp, config);
    }
}

/// A config file as it was read, for checking it against the weights read beside it: the
/// fingerprints of its bytes ([`fingerprint`], [`meaning_fingerprint`]) and the time it was
/// last changed.
#[derive(Clone, Debug)]
pub(crate) struct ConfigStamp {
    pub(crate) exact: String,
    pub(crate) meaning: Option<String>,
    pub(crate) modified: Option<std::time::SystemTime>,
}

impl ConfigStamp {
    /// The stamp of `bytes`, read from a file last changed at `modified`.
    pub(crate) fn of(bytes: &[u8], modified: Option<std::time::SystemTime>) -> ConfigStamp {
        ConfigStamp { exact: fingerprint(bytes), meaning: meaning_fingerprint(bytes), modified }
    }

    /// The bytes of the config file `path` as it is now, with their stamp.
    pub(crate) fn read(path: &Path) -> crate::error::Result<(Vec<u8>, ConfigStamp)> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let bytes = super::json::read_config_bytes(path)?;
        let stamp = ConfigStamp::of(&bytes, modified);
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
    use super::{fingerprint, meaning_fingerprint};

    #[test]
    fn meaning_ignores_layout_order_and_provenance() {
        let a = meaning_fingerprint(br#"{"r": 4, "target_modules": ["q", "v"], "base_model_name_or_path": "x"}"#);
        let b = meaning_fingerprint(b"{\n  \"target_modules\": [\"q\", \"v\"],\n  \"r\": 4, \"revision\": \"main\"\n}");
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, meaning_fingerprint(br#"{"r": 8, "target_modules": ["q", "v"]}"#));
        assert_ne!(a, meaning_fingerprint(br#"{"r": 4, "target_modules": ["v", "q"]}"#));
        assert_eq!(meaning_fingerprint(b"[1]"), None);
        let marked = [b"\xEF\xBB\xBF".as_slice(), br#"{"r": 4, "target_modules": ["q", "v"]}"#].concat();
        assert_eq!(meaning_fingerprint(&marked), a, "a byte-order mark changes no meaning");
    }

    /// A save killed between its renames is finished; a leftover temporary of the config
    /// already in place is removed; a temporary of another config is left alone.
    #[test]
    fn interrupted_pairs_are_finished_and_leftovers_removed() {
        use crate::io::safetensors::{HostTensor, serialize};
        let dir = std::env::temp_dir().join(format!("peft-wgpu-stamp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test file");
        let (weights, config) = (dir.join("w.safetensors"), dir.join("c.json"));
        let t = HostTensor::new(vec![1], vec![1.0]).expect("test file");
        let meta = std::collections::HashMap::from([(super::CONFIG_STAMP_KEY.to_string(), fingerprint(b"new"))]);
        std::fs::write(&weights, serialize(&weights, &[("t".into(), &t)], Some(meta)).expect("test file"))
            .expect("test file");
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

    #[test]
    fn fnv1a_matches_published_values() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fingerprint(b"foobar"), "85944171f73967e8");
    }
}
