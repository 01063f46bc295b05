//! Writing safetensors files: f32 tensors for adapters and models, any dtype for data sets.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{HostTensor, format_err};
use crate::error::{Error, Result};

/// The bytes of a safetensors file holding f32 `tensors` (sorted by name, as safetensors
/// requires) and optional `__metadata__`; `path` only names the file in messages.
pub fn serialize(
    path: &Path,
    tensors: &[(String, &HostTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    for (key, t) in tensors {
        if crate::tensor::checked_numel(&t.shape) != Some(t.data.len()) {
            return Err(format_err(path, format!("tensor `{key}`: {} values for shape {:?}", t.data.len(), t.shape)));
        }
    }
    let raw: Vec<RawTensor<'_>> = tensors
        .iter()
        .map(|(key, t)| RawTensor { key, dtype: "F32", shape: &t.shape, bytes: bytemuck::cast_slice(&t.data) })
        .collect();
    serialize_raw(path, &raw, metadata)
}

/// One tensor to write as it is: its safetensors dtype name and little-endian bytes.
pub(crate) struct RawTensor<'a> {
    pub(crate) key: &'a str,
    pub(crate) dtype: &'static str,
    pub(crate) shape: &'a [usize],
    pub(crate) bytes: &'a [u8],
}

/// [`serialize`] for tensors of any dtype, whose bytes the caller has checked against shapes.
pub(crate) fn serialize_raw(
    path: &Path,
    tensors: &[RawTensor<'_>],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    // Written by hand rather than through the crate so the bytes are the same on every run:
    // tensors in name order, `__metadata__` keys sorted (a HashMap would order them randomly).
    let mut sorted: Vec<&RawTensor<'_>> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(b.key));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(format_err(path, format!("tensor `{}` written twice", pair[0].key)));
    }
    let mut header = serde_json::Map::new();
    if let Some(meta) = metadata {
        let meta: BTreeMap<String, String> = meta.into_iter().collect();
        header.insert("__metadata__".into(), serde_json::to_value(meta).unwrap_or_default());
    }
    let mut offset = 0usize;
    for t in &sorted {
        let end = offset + t.bytes.len();
        header.insert(
            t.key.to_string(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_string(&serde_json::Value::Object(header)).unwrap_or_default().into_bytes();
    // The data section starts 8-byte aligned; the format pads the header with spaces.
    head.resize(head.len().next_multiple_of(8), b' ');
    let total = 8 + head.len() + offset;
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| {
        let message = format!("writing it needs {total} bytes of memory, more than the system gives this process");
        Error::Io { path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, message) }
    })?;
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for t in &sorted {
        out.extend_from_slice(t.bytes);
    }
    Ok(out)
}

/// Writes f32 tensors to `path` atomically, with optional `__metadata__`.
pub fn write(path: &Path, tensors: &[(String, &HostTensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    crate::io::atomic::write(path, &serialize(path, tensors, metadata)?)
}
