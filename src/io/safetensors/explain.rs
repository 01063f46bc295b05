//! Why bytes are not a safetensors file, in words a user can act on: a Git LFS pointer, an
//! HTML page from a failed download, a truncated tensor, stray bytes after the last one.

use super::MAX_HEADER_BYTES;

/// Why a file whose first 8 bytes are not a plausible header length is not a safetensors file;
/// `len` is the file's length, `None` for a stream of unknown length.
pub(super) fn explain_bad_start(start: &[u8], len: Option<u64>) -> String {
    let text = String::from_utf8_lossy(&start[..start.len().min(64)]).to_ascii_lowercase();
    if text.starts_with("version https://git-lfs") {
        "is a Git LFS pointer, not the tensors themselves; fetch the real file (git lfs pull)".into()
    } else if text.trim_start().starts_with('<') {
        "looks like an HTML page (a failed download?), not a safetensors file".into()
    } else if text.trim_start().starts_with('{') {
        "looks like a JSON file, not a safetensors file".into()
    } else {
        let header = start.get(..8).and_then(|h| h.try_into().ok()).map_or(0, u64::from_le_bytes);
        match len {
            Some(len) => format!(
                "not a safetensors file, or truncated: it starts with a header length of {header} bytes \
                 but the file has {len} bytes"
            ),
            None => format!(
                "not a safetensors file: it starts with a header length of {header} bytes, more than the \
                 format allows ({MAX_HEADER_BYTES})"
            ),
        }
    }
}

/// A precise reason why `bytes` failed the format's validation: which tensor runs past the
/// end (a truncated file), stray bytes after the last tensor, or the validator's own message.
pub(super) fn explain_invalid(bytes: &[u8], err: &safetensors::SafeTensorError) -> String {
    let Some(head) = bytes.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()) else {
        return format!("not a safetensors file: only {} bytes", bytes.len());
    };
    let n = u64::from_le_bytes(head);
    let rest = bytes.len() as u64 - 8;
    if n > rest || n > MAX_HEADER_BYTES {
        return explain_bad_start(&bytes[..bytes.len().min(64)], Some(bytes.len() as u64));
    }
    let available = rest - n;
    let header = &bytes[8..8 + n as usize];
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(header) {
        let ends = map.iter().filter(|(k, _)| k.as_str() != "__metadata__").filter_map(|(k, v)| {
            let end = v.get("data_offsets")?.as_array()?.get(1)?.as_u64()?;
            Some((k, end))
        });
        let mut last = 0u64;
        for (key, end) in ends {
            if end > available {
                return format!(
                    "truncated: tensor `{key}` ends at byte {end} of the data section, but only {available} \
                     bytes follow the header (an interrupted download or copy?)"
                );
            }
            last = last.max(end);
        }
        if matches!(err, safetensors::SafeTensorError::MetadataIncompleteBuffer) && last < available {
            return format!("{} unexpected bytes after the last tensor (a corrupt file?)", available - last);
        }
    }
    format!("not a valid safetensors file: {err}")
}
