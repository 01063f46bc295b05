//! Safetensors files, validated before anything reaches the GPU: header size and JSON,
//! offsets inside the file, dtypes, shapes, and finite values.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::memory;
use crate::error::{Error, Result};

mod contents;
mod explain;
mod host;
mod write;

use contents::Contents;
use explain::{explain_bad_start, explain_extent, explain_invalid, repeated_key};
pub use host::HostTensor;
pub(crate) use write::{RawTensor, serialize_raw};
pub use write::{serialize, write};

/// Largest header accepted (the format's own bound).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Dtype, shape and byte range (relative to the data section) of one tensor.
type Entry = (Dtype, Vec<usize>, (usize, usize));

/// A safetensors file read into memory with its validated index.
pub struct TensorFile {
    path: PathBuf,
    contents: Contents,
    data_start: usize,
    index: BTreeMap<String, Entry>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorFile({}, {} tensors)", self.path.display(), self.index.len())
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), message: message.into() }
}

/// The `__metadata__` of the safetensors file `path`, reading only its header; `None` when
/// the file cannot be read or its header is not a safetensors header (the full reader,
/// [`TensorFile::open`], explains what is wrong).
pub fn header_metadata(path: &Path) -> Option<HashMap<String, String>> {
    let value = header_json(path)?;
    let meta = value.get("__metadata__")?.as_object()?;
    meta.iter().map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

/// The JSON header of the regular safetensors file `path`, reading nothing else; `None` when
/// it cannot be read or is no safetensors header ([`TensorFile::open`] explains why).
pub(crate) fn header_json(path: &Path) -> Option<serde_json::Value> {
    // Looked at before opening: opening a pipe would block, or take its data from the reader.
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head).ok()?;
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER_BYTES || n > meta.len().saturating_sub(8) {
        return None;
    }
    let mut header = Vec::new();
    (&mut file).take(n).read_to_end(&mut header).ok()?;
    serde_json::from_slice(&header).ok()
}

impl TensorFile {
    /// Reads and validates `path`. The header is checked against the file size before the
    /// body is read, so a corrupt length never triggers a huge allocation, and a file too large
    /// for memory is an error rather than an abort.
    pub fn open(path: &Path) -> Result<TensorFile> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Err(format_err(path, "is a folder, expected a .safetensors file"));
        }
        let mut file = std::fs::File::open(path).map_err(io)?;
        // A pipe or device; or a file whose size the system does not know (procfs and sysfs
        // report 0 bytes for files that have contents): read as a stream.
        if !meta.is_file() || meta.len() == 0 {
            return TensorFile::parse(path, Contents::from_bytes(path, &read_stream(path, &mut file)?)?, true);
        }
        let len = meta.len();
        let mut head = [0u8; 8];
        if len < 8 {
            return Err(format_err(path, format!("not a safetensors file: only {len} bytes")));
        }
        file.read_exact(&mut head).map_err(io)?;
        let header = u64::from_le_bytes(head);
        if header > MAX_HEADER_BYTES || header > len - 8 {
            let mut start = head.to_vec();
            let _ = (&mut file).take(56).read_to_end(&mut start);
            return Err(format_err(path, explain_bad_start(&start, Some(len))));
        }
        // The header alone tells a truncated file, or one with bytes after its last tensor,
        // before its data (gigabytes, perhaps) is read.
        let mut start = head.to_vec();
        (&mut file).take(header).read_to_end(&mut start).map_err(io)?;
        if let Some(reason) = explain_extent(&start[8..], len - 8 - header) {
            return Err(format_err(path, reason));
        }
        let contents = Contents::read(path, &mut file, start, len)?;
        TensorFile::parse(path, contents, false)
    }

    /// Validates `bytes` as the contents of `path` (the path is only used in messages): the
    /// header is JSON with known dtypes, every tensor's bytes match its dtype and shape, the
    /// tensors tile the data section exactly, and the file ends where the last one does.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
        TensorFile::parse(path, Contents::from_bytes(path, bytes)?, false)
    }

    /// [`TensorFile::from_bytes`]; `stream` when the contents came from a pipe or device, read
    /// only up to one byte past the announced end (so how many more follow is unknown).
    fn parse(path: &Path, contents: Contents, stream: bool) -> Result<TensorFile> {
        let bytes = contents.bytes();
        let announced = bytes.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()).map(u64::from_le_bytes);
        let header = announced.and_then(|n| bytes.get(8..usize::try_from(n).ok()?.checked_add(8)?));
        if let Some(key) = header.and_then(repeated_key) {
            return Err(format_err(path, format!("not a valid safetensors file: its header holds `{key}` twice")));
        }
        let (header_len, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, explain_invalid(bytes, &e, stream)))?;
        let index = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, (info.dtype, info.shape.clone(), info.data_offsets)))
            .collect();
        Ok(TensorFile {
            path: path.to_path_buf(),
            data_start: 8 + header_len,
            index,
            metadata: meta.metadata().clone().unwrap_or_default(),
            contents,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.index.get(key).map(|(_, s, _)| s.as_slice())
    }

    /// Element type of `key`, if present.
    pub(crate) fn dtype(&self, key: &str) -> Option<Dtype> {
        self.index.get(key).map(|(d, _, _)| *d)
    }

    /// The `__metadata__` map.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The fingerprint of the whole file's bytes ([`crate::io::stamp::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        crate::io::stamp::fingerprint(self.contents.bytes())
    }

    fn raw(&self, key: &str) -> Result<(Dtype, &[usize], &[u8])> {
        let (dtype, shape, (a, b)) = self.entry(key)?;
        Ok((*dtype, shape, &self.contents.bytes()[self.data_start + a..self.data_start + b]))
    }

    /// The index entry of `key`.
    fn entry(&self, key: &str) -> Result<&Entry> {
        self.index.get(key).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), key: key.to_string() })
    }

    /// Tensor `key` as f32 (from F32, F16, BF16 or F64); every value must be finite.
    pub fn f32(&self, key: &str) -> Result<HostTensor> {
        let t = self.f32_any(key)?;
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            let at = unravel(i, &t.shape);
            // A finite F64 value too large for f32 reads as an infinity: name the value.
            let stored = match self.raw(key)? {
                (Dtype::F64, _, raw) => raw[8 * i..8 * i + 8].try_into().ok().map(f64::from_le_bytes),
                _ => None,
            };
            let message = match stored {
                Some(v) if v.is_finite() => format!("tensor `{key}` holds {v:e} at index {at:?}, beyond f32's range"),
                _ => format!("tensor `{key}` holds {} at index {at:?}", t.data[i]),
            };
            return Err(format_err(&self.path, message));
        }
        Ok(t)
    }

    /// Tensor `key` as f32 (from F32, F16, BF16 or F64), non-finite values included; callers
    /// check them with messages of their own.
    pub fn f32_any(&self, key: &str) -> Result<HostTensor> {
        let (dtype, shape, raw) = self.raw(key)?;
        let (width, convert): (usize, fn(&[u8]) -> f32) = match dtype {
            Dtype::F32 => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Dtype::F64 => (8, |c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
            Dtype::F16 => (2, |c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            Dtype::BF16 => (2, |c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)),
            other => return Err(self.mismatch(key, "a float tensor (F32, F16, BF16 or F64)", other)),
        };
        let mut data = memory::reserve::<f32>(&self.path, raw.len() / width)?;
        data.extend(raw.chunks_exact(width).map(convert));
        Ok(HostTensor { shape: shape.to_vec(), data })
    }

    /// Tensor `key` as f32 like [`TensorFile::f32_any`], taking the file: an F32 tensor is
    /// moved to the front of the file's memory and becomes the result there, so reading a
    /// large tensor needs no second copy of it.
    pub fn into_f32_any(self, key: &str) -> Result<HostTensor> {
        let (dtype, shape, (a, b)) = self.entry(key)?.clone();
        if dtype != Dtype::F32 {
            return self.f32_any(key);
        }
        let data = self.contents.into_f32(self.data_start + a..self.data_start + b);
        Ok(HostTensor { shape, data })
    }

    /// Tensors `keys` as f32 like [`TensorFile::f32`] (every value finite), taking the file:
    /// they are converted from the last in the file to the first, and the file's memory
    /// behind each is given back before the next, so the file and the f32 copies are not
    /// held in full at once. A key named twice is converted once and returned for each.
    pub fn into_f32_tensors(mut self, keys: &[&str]) -> Result<Vec<HostTensor>> {
        let mut unique: Vec<(usize, &str)> = Vec::with_capacity(keys.len());
        for &key in keys {
            let start = self.entry(key)?.2.0;
            if !unique.iter().any(|&(_, k)| k == key) {
                unique.push((start, key));
            }
        }
        // Tensors tile the data section, so every one converted later lies before the cut.
        unique.sort_unstable_by_key(|&(start, _)| std::cmp::Reverse(start));
        let mut done: HashMap<&str, HostTensor> = HashMap::with_capacity(unique.len());
        for (start, key) in unique {
            done.insert(key, self.f32(key)?);
            self.contents.truncate(self.data_start + start);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let tensor = if keys[i + 1..].contains(key) { done.get(key).cloned() } else { done.remove(key) };
            out.push(tensor.ok_or_else(|| Error::MissingTensor { path: self.path.clone(), key: key.to_string() })?);
        }
        Ok(out)
    }

    /// Tensor `key` as f32, which must have exactly `expected` shape.
    pub fn f32_shaped(&self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        self.check_shape(key, expected)?;
        self.f32(key)
    }

    /// Fails unless tensor `key` is here with exactly `expected` shape (an error naming the
    /// file and the key), reading no values.
    pub fn check_shape(&self, key: &str, expected: &[usize]) -> Result<()> {
        let (_, shape, _) = self.entry(key)?;
        if shape != expected {
            return Err(Error::TensorMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: format!("shape {expected:?}"),
                got: format!("shape {shape:?}"),
            });
        }
        Ok(())
    }

    /// Integer tensor `key` (I64, I32, I16, I8, U8, U16, U32 or U64) widened to i64.
    pub fn integers(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dtype, shape, raw) = self.raw(key)?;
        let (width, convert): (usize, fn(&[u8]) -> i64) = match dtype {
            Dtype::I64 => (8, |c| i64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or([0; 8]))),
            Dtype::U64 => {
                (8, |c| i64::try_from(u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or([0; 8]))).unwrap_or(i64::MAX))
            }
            Dtype::I32 => (4, |c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            Dtype::U32 => (4, |c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            Dtype::I16 => (2, |c| i64::from(i16::from_le_bytes([c[0], c[1]]))),
            Dtype::U16 => (2, |c| i64::from(u16::from_le_bytes([c[0], c[1]]))),
            Dtype::I8 => (1, |c| i64::from(c[0] as i8)),
            Dtype::U8 => (1, |c| i64::from(c[0])),
            other => return Err(self.mismatch(key, "an integer tensor (I64, I32, U8 or another integer type)", other)),
        };
        if dtype == Dtype::U64
            && let Some(i) = raw.chunks_exact(8).position(|c| c[7] >= 0x80)
        {
            let v = u64::from_le_bytes(<[u8; 8]>::try_from(&raw[i * 8..i * 8 + 8]).unwrap_or([0; 8]));
            return Err(Error::Format {
                path: self.path.clone(),
                message: format!("`{key}[{i}]` is {v}, beyond any count or index this crate handles (2⁶³ − 1)"),
            });
        }
        let mut data = memory::reserve::<i64>(&self.path, raw.len() / width)?;
        data.extend(raw.chunks_exact(width).map(convert));
        Ok((shape.to_vec(), data))
    }

    /// The error for tensor `key` of `dtype` where `expected` was wanted.
    fn mismatch(&self, key: &str, expected: &str, dtype: Dtype) -> Error {
        Error::TensorMismatch {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.into(),
            got: format!("{dtype:?}"),
        }
    }
}

/// `flat` as a multi-index of `shape` (for messages).
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for (slot, &d) in at.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = flat % d;
            flat /= d;
        }
    }
    at
}

/// The bytes of a safetensors file arriving through a pipe or device (`--data /dev/stdin`),
/// whose length is not known up front: the header first (bounded like a file's), then as
/// many bytes as its tensors need plus one, so that a stream that does not end (or ends
/// early) is reported by [`TensorFile::from_bytes`] instead of filling memory.
fn read_stream(path: &Path, file: &mut std::fs::File) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    file.take(8).read_to_end(&mut bytes).map_err(io)?;
    let Ok(head) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Err(format_err(path, format!("not a safetensors file: only {} bytes", bytes.len())));
    };
    let header = u64::from_le_bytes(head);
    if header > MAX_HEADER_BYTES {
        let _ = file.take(56).read_to_end(&mut bytes);
        return Err(format_err(path, explain_bad_start(&bytes, None)));
    }
    file.take(header).read_to_end(&mut bytes).map_err(io)?;
    let data_end = serde_json::from_slice::<serde_json::Value>(&bytes[8..])
        .ok()
        .and_then(|v| v.as_object()?.values().filter_map(|t| t.get("data_offsets")?.as_array()?.get(1)?.as_u64()).max())
        .unwrap_or(0);
    // Room for what the header announces (and one byte more, to see a stream that runs on).
    let announced = (bytes.len() as u64).saturating_add(data_end).saturating_add(1);
    let mut all = memory::reserve::<u8>(path, usize::try_from(announced).unwrap_or(usize::MAX))?;
    all.extend_from_slice(&bytes);
    file.take(data_end.saturating_add(1)).read_to_end(&mut all).map_err(io)?;
    Ok(all)
}

/// Exact IEEE half → single conversion.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac · 2^-24.
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests;
