//! Reading JSON config files with errors that name the file and the field.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A parsed JSON object with its path, for field access with precise errors.
#[derive(Clone, Debug)]
pub struct JsonFile {
    path: std::path::PathBuf,
    object: Map<String, Value>,
}

/// Largest config file accepted; real configs are a few kilobytes.
// A transformers config lists every label by name (`id2label`, `label2id`): about 57 MB for
// the 1,048,576 labels a model may have.
const MAX_CONFIG_BYTES: u64 = 128 << 20;

/// The bytes of the config file `path`: a directory, or more than [`MAX_CONFIG_BYTES`]
/// (also from a pipe or device, which report no length), is an error naming the file.
pub(crate) fn read_config_bytes(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if meta.is_dir() {
        return Err(Error::Format { path: path.to_path_buf(), message: "is a directory, expected a JSON file".into() });
    }
    let too_large = |bytes: String| Error::Format {
        path: path.to_path_buf(),
        message: format!("is too large for a config file ({bytes} bytes; at most {MAX_CONFIG_BYTES})"),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(meta.len().to_string()));
    }
    // A pipe or device reports no length: read one byte past the limit to know.
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut text = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(format!("more than {MAX_CONFIG_BYTES}")));
    }
    Ok(text)
}

/// The text of a config file without the UTF-8 byte-order mark it may begin with, which is
/// no part of its JSON.
pub(crate) fn without_bom(text: &[u8]) -> &[u8] {
    text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text)
}

impl JsonFile {
    /// Reads and parses `path`, which must hold a JSON object (at most 128 MiB, also from a
    /// pipe or device).
    pub fn read(path: &Path) -> Result<JsonFile> {
        JsonFile::parse(path, &read_config_bytes(path)?)
    }

    /// Parses `text` as the contents of `path` (after a UTF-8 byte-order mark, which some
    /// Windows editors write, if there is one).
    pub fn parse(path: &Path, text: &[u8]) -> Result<JsonFile> {
        let value: Value = serde_json::from_slice(without_bom(text))
            .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("invalid JSON: {e}") })?;
        match value {
            Value::Object(object) => Ok(JsonFile { path: path.to_path_buf(), object }),
            _ => Err(Error::Format { path: path.to_path_buf(), message: "expected a JSON object".into() }),
        }
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw object.
    pub fn object(&self) -> &Map<String, Value> {
        &self.object
    }

    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config { path: self.path.clone(), key: key.to_string(), message: message.into() }
    }

    /// The field `key` unless absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is there with the value null (which [`JsonFile::get`] reads as absent).
    pub fn is_null(&self, key: &str) -> bool {
        self.object.get(key).is_some_and(Value::is_null)
    }

    /// A required field.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.err(key, "is missing"))
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<String> {
        self.require(key)?.as_str().map(str::to_string).ok_or_else(|| self.err(key, "must be a string"))
    }

    /// An optional string.
    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.err(key, "must be a string")))
            .transpose()
    }

    /// A required integer in `min..=max`.
    pub fn usize_in(&self, key: &str, min: usize, max: usize) -> Result<usize> {
        self.opt_usize_in(key, min, max)?.ok_or_else(|| self.err(key, "is missing"))
    }

    /// An optional integer in `min..=max`.
    pub fn opt_usize_in(&self, key: &str, min: usize, max: usize) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n = whole_number(v).ok_or_else(|| self.err(key, format!("must be a non-negative integer, got {v}")))?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n < min || n > max {
            return Err(self.err(key, format!("must be between {min} and {max}, got {n}")));
        }
        Ok(Some(n))
    }

    /// An optional finite number. An explicit `null` is refused: it is no number, and PEFT and transformers take it as
    /// the value `None`, which no computation accepts (the key left out gives the default).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.object.get(key) else { return Ok(None) };
        if v.is_null() {
            return Err(self.err(key, "is null; give a number, or leave the key out for the default"));
        }
        let x = v.as_f64().ok_or_else(|| self.err(key, format!("must be a number, got {v}")))?;
        // Everything computes in f32: a value beyond its range would become an infinity.
        if !(x as f32).is_finite() {
            return Err(self.err(key, format!("is {x:e}, beyond the f32 range the kernels compute in")));
        }
        Ok(Some(x))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.err(key, format!("must be true or false, got {v}"))))
            .transpose()
    }

    /// An optional list of strings (a single string counts as a list of one).
    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v {
            Value::String(s) => Ok(Some(vec![s.clone()])),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(|| self.err(key, "must be a list of strings")))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => Err(self.err(key, "must be a string or a list of strings")),
        }
    }

    /// A config error on `key` of this file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        self.err(key, message)
    }
}

/// `v` as a non-negative integer: an integer, or a number with no fraction (`2.0`, as a
/// config written by Python code may spell a rank) below 2⁵³, where every whole float is
/// exact (`1e300` is not read as some integer).
pub fn whole_number(v: &Value) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && (0.0..EXACT).contains(f)).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transformers config of a head with 300,000 labels (about 17 MB, most of it
    /// `id2label` and `label2id`) is read; a file past the bound is refused by name.
    #[test]
    fn configs_of_large_heads_are_read() {
        let dir = std::env::temp_dir().join(format!("peft-wgpu-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let labels = 300_000;
        let id2label: Map<String, Value> = (0..labels).map(|i| (i.to_string(), format!("LABEL_{i}").into())).collect();
        let label2id: Map<String, Value> = (0..labels).map(|i| (format!("LABEL_{i}"), i.into())).collect();
        let config = serde_json::json!({"num_labels": labels, "id2label": id2label, "label2id": label2id});
        let path = dir.join("config.json");
        // Indented, as transformers writes it.
        std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json")).expect("write");
        assert!(std::fs::metadata(&path).expect("size").len() > 16 << 20);
        let read = JsonFile::read(&path).expect("a large head's config");
        assert_eq!(read.get("num_labels"), Some(&Value::from(labels)));
        let big = std::fs::File::create(&path).expect("file");
        big.set_len(MAX_CONFIG_BYTES + 1).expect("size");
        let e = JsonFile::read(&path).expect_err("past the bound").to_string();
        assert!(e.contains("too large for a config file") && e.contains("config.json"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
