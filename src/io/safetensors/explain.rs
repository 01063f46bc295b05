//! Why bytes are not a safetensors file, in words a user can act on: a Git LFS pointer, an
//! HTML page from a failed download, a truncated tensor, stray bytes after the last one, the
//! tensor whose offsets or size are wrong.

use super::MAX_HEADER_BYTES;

/// Why a file whose first 8 bytes are not a plausible header length is not a safetensors file;
/// `len` is the file's length, `None` for a stream of unknown length.
pub(super) fn explain_bad_start(start: &[u8], len: Option<u64>) -> String {
    let text = String::from_utf8_lossy(&start[..start.len().min(64)]).to_ascii_lowercase();
    // A header length can begin with the byte of `<` or `{` too (a header of 316 bytes does);
    // text has no zero or control bytes among its first 8.
    let textual = start.iter().take(8).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text.starts_with("version https://git-lfs") {
        "is a Git LFS pointer, not the tensors themselves; fetch the real file (git lfs pull)".into()
    } else if textual && text.trim_start().starts_with('<') {
        "looks like an HTML page (a failed download?), not a safetensors file".into()
    } else if textual && text.trim_start().starts_with('{') {
        "looks like a JSON file, not a safetensors file".into()
    } else {
        let header = start.get(..8).and_then(|h| h.try_into().ok()).map_or(0, u64::from_le_bytes);
        match len {
            Some(len) if header <= MAX_HEADER_BYTES => format!(
                "not a safetensors file, or truncated: its first 8 bytes announce a header of {header} bytes, \
                 which with them needs {} bytes, but the file has {len}",
                u128::from(header) + 8
            ),
            _ => format!(
                "not a safetensors file: its first 8 bytes announce a header of {header} bytes, more than the \
                 format allows ({MAX_HEADER_BYTES})"
            ),
        }
    }
}

/// A precise reason why `bytes` (read from a pipe or device when `stream`) failed the
/// format's validation: which tensor runs past the end (a truncated file), stray bytes after
/// the last tensor (how many, except in a stream), the first tensor out of place or of the
/// wrong size ([`explain_layout`]), or else the validator's own message.
pub(super) fn explain_invalid(bytes: &[u8], err: &safetensors::SafeTensorError, stream: bool) -> String {
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
    let parsed = serde_json::from_slice::<serde_json::Value>(header);
    if let Err(e) = &parsed {
        return format!("not a valid safetensors file: its header is not valid JSON ({e})");
    }
    if let Ok(other) = &parsed
        && !other.is_object()
    {
        let kind = match other {
            serde_json::Value::Array(_) => "a list",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return format!("not a valid safetensors file: its header is {kind}, not a JSON object of tensors");
    }
    if let Ok(serde_json::Value::Object(map)) = parsed {
        let extent = extent(&map, available);
        if let Extent::Truncated(reason) = extent {
            return reason;
        }
        if let Some(reason) = explain_layout(&map) {
            return format!("not a valid safetensors file: {reason}");
        }
        if let Extent::Trailing(extra) = extent
            && matches!(err, safetensors::SafeTensorError::MetadataIncompleteBuffer)
        {
            return trailing(extra, stream);
        }
    }
    format!("not a valid safetensors file: {err}")
}

/// How the tensors of a header end against the `available` bytes after it.
enum Extent {
    /// The last one ends where the bytes do, or the header does not say where each ends.
    Fits,
    /// One ends past the bytes: why, naming it.
    Truncated(String),
    /// This many bytes follow the last one.
    Trailing(u64),
}

fn extent(map: &serde_json::Map<String, serde_json::Value>, available: u64) -> Extent {
    let ends = map.iter().filter(|(k, _)| k.as_str() != "__metadata__").map(|(k, v)| {
        let end = v.get("data_offsets")?.as_array()?.get(1)?.as_u64()?;
        Some((k, end))
    });
    let mut last = 0u64;
    for (key, end) in ends.flatten() {
        if end > available {
            return Extent::Truncated(format!(
                "truncated: tensor `{key}` ends at byte {end} of the data section, but only {available} bytes \
                 follow the header (an interrupted download or copy?)"
            ));
        }
        last = last.max(end);
    }
    if last < available { Extent::Trailing(available - last) } else { Extent::Fits }
}

fn trailing(extra: u64, stream: bool) -> String {
    if stream {
        "unexpected bytes after the last tensor (a corrupt stream?)".into()
    } else {
        format!("{extra} unexpected bytes after the last tensor (a corrupt file?)")
    }
}

/// Why a regular file whose header is `header` and whose data section has `available` bytes
/// is not a safetensors file, told from the header alone, before the data is read: a tensor
/// that ends past the file, or bytes after the last tensor (where every tensor says where it
/// ends). `None` when the extents agree or the header is malformed in another way, which the
/// full validation tells.
pub(super) fn explain_extent(header: &[u8], available: u64) -> Option<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(header) else { return None };
    // Bytes after the last tensor are the fault only where each tensor says where it ends and
    // each one's place and size are right; otherwise the tensor out of place is (a short
    // tensor leaves bytes over too). Checked only when there are bytes over.
    let told = || {
        map.iter().filter(|(k, _)| k.as_str() != "__metadata__").all(|(_, v)| {
            let offsets = v.get("data_offsets").and_then(|o| o.as_array());
            offsets.is_some_and(|o| o.len() == 2 && o.iter().all(|x| x.is_u64()))
        }) && explain_layout(&map).is_none()
    };
    match extent(&map, available) {
        Extent::Truncated(reason) => Some(reason),
        Extent::Trailing(extra) if told() => Some(trailing(extra, false)),
        _ => None,
    }
}

/// The first key that `header`, a JSON object, holds twice; `None` when each key is there
/// once or the header is no object. A JSON map keeps one of the two, so which tensor the file
/// means would be a guess.
pub(super) fn repeated_key(header: &[u8]) -> Option<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if let Some(key) = seen.replace(key) {
                    return Ok(Some(key));
                }
            }
            Ok(None)
        }
    }
    let mut parser = serde_json::Deserializer::from_slice(header);
    serde::Deserializer::deserialize_map(&mut parser, Keys).ok().flatten()
}

/// The first tensor of a header (a JSON object) whose place or size is wrong, in offset
/// order: one that does not start where the one before it ends (a gap, as a tensor missing
/// from the header leaves, or an overlap), whose byte count overflows, or whose bytes do not
/// match its dtype and shape. `None` when each is right, or the header is malformed in some
/// other way (the validator's own message says how).
fn explain_layout<'a>(map: &'a serde_json::Map<String, serde_json::Value>) -> Option<String> {
    struct Entry<'a> {
        key: &'a str,
        dtype: safetensors::Dtype,
        shape: Vec<u64>,
        start: u64,
        end: u64,
    }
    let entry = |(key, v): (&'a String, &serde_json::Value)| -> Option<Entry<'a>> {
        let dtype = serde_json::from_value(v.get("dtype")?.clone()).ok()?;
        let shape = v.get("shape")?.as_array()?.iter().map(serde_json::Value::as_u64).collect::<Option<_>>()?;
        let offsets = v.get("data_offsets")?.as_array()?;
        let [start, end] = [offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?];
        Some(Entry { key, dtype, shape, start, end })
    };
    let tensors = || map.iter().filter(|(k, _)| k.as_str() != "__metadata__");
    for (key, v) in tensors() {
        let whole = |x: &serde_json::Value| x.is_u64();
        if let Some(offsets) = v.get("data_offsets")
            && !offsets.as_array().is_some_and(|o| o.len() == 2 && o.iter().all(whole))
        {
            return Some(format!("tensor `{key}` has data_offsets {offsets}, not two whole numbers ≥ 0 (start, end)"));
        }
        if let Some(shape) = v.get("shape")
            && !shape.as_array().is_some_and(|s| s.iter().all(whole))
        {
            return Some(format!("tensor `{key}` has shape {shape}, not a list of whole numbers ≥ 0"));
        }
    }
    let mut entries: Vec<Entry<'_>> = tensors().map(entry).collect::<Option<_>>()?;
    entries.sort_by_key(|e| (e.start, e.end));
    let mut at = 0u64;
    for e in &entries {
        let (key, start, end) = (e.key, e.start, e.end);
        if end < start {
            return Some(format!("tensor `{key}` has data_offsets [{start}, {end}], which end before they start"));
        }
        if start > at {
            return Some(format!(
                "bytes {at}..{start} of the data section belong to no tensor (a tensor missing from the \
                 header?); the next is `{key}`"
            ));
        }
        if start < at {
            return Some(format!(
                "tensor `{key}` (bytes {start}..{end}) overlaps the tensor before it, which ends at byte {at}"
            ));
        }
        let bits = e.shape.iter().try_fold(e.dtype.bitsize() as u64, |n, &d| n.checked_mul(d));
        let Some(bits) = bits else {
            return Some(format!("tensor `{key}` has shape {:?}, too large to count its bytes", e.shape));
        };
        if bits % 8 != 0 {
            return Some(format!(
                "tensor `{key}` is {:?} of shape {:?}, {bits} bits, which is not a whole number of bytes",
                e.dtype, e.shape
            ));
        }
        if bits / 8 != end - start {
            return Some(format!(
                "tensor `{key}` is {:?} of shape {:?}, {} bytes, but its data_offsets [{start}, {end}] hold {}",
                e.dtype,
                e.shape,
                bits / 8,
                end - start
            ));
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::TensorFile;

    /// A safetensors file whose header holds `entries` and whose data section is 24 zero bytes.
    fn crafted(entries: &str) -> Vec<u8> {
        let header = format!("{{{entries}}}");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 24]);
        bytes
    }

    /// A header that is JSON but no object is named for what it is, in the file's terms
    /// (not the validator's type names).
    #[test]
    fn a_header_that_is_no_object_is_named() {
        for (header, kind) in [("[1,2]", "a list"), (r#""hello""#, "a string"), ("null", "null"), ("7", "a number")] {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            let e = TensorFile::from_bytes(Path::new("x.safetensors"), &bytes).expect_err(header).to_string();
            assert!(e.contains(&format!("its header is {kind}, not a JSON object")), "{e}");
        }
    }

    /// A page saved instead of the file is called one; a cut file whose header length
    /// begins with the byte of `<` or `{` (a header of 316 or 379 bytes) is called cut.
    #[test]
    fn pages_and_cut_files_are_told_apart() {
        for page in [&b"<!DOCTYPE html><html>"[..], b"\n  <html>\n"] {
            let e = TensorFile::from_bytes(Path::new("x.safetensors"), page).expect_err("a page").to_string();
            assert!(e.contains("looks like an HTML page"), "{e}");
        }
        for length in [0x13c_u64, 0x17b] {
            let mut cut = length.to_le_bytes().to_vec();
            cut.extend_from_slice(&[b' '; 200]);
            let e = TensorFile::from_bytes(Path::new("x.safetensors"), &cut).expect_err("a cut file").to_string();
            let want = format!("announce a header of {length} bytes, which with them needs {} bytes", length + 8);
            assert!(e.contains(&want) && e.contains("but the file has 208"), "{e}");
        }
    }

    #[test]
    fn a_tensor_out_of_place_is_named() {
        let cases = [
            // `b`'s shape says 4 values, its offsets hold 2.
            (
                r#""a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,24]}"#,
                "tensor `b` is F32 of shape [4], 16 bytes, but its data_offsets [16, 24] hold 8",
            ),
            // F16 where the bytes were written as F32.
            (
                r#""a":{"dtype":"F16","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}"#,
                "tensor `a` is F16 of shape [4], 8 bytes",
            ),
            // `a` dropped from the header: its bytes belong to no tensor.
            (
                r#""b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}"#,
                "bytes 0..16 of the data section belong to no tensor (a tensor missing from the header?); the next is `b`",
            ),
            (
                r#""a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}"#,
                "tensor `b` (bytes 8..24) overlaps the tensor before it, which ends at byte 16",
            ),
            (
                r#""a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[5],"data_offsets":[2,22]}"#,
                "tensor `a` is F4 of shape [3], 12 bits, which is not a whole number of bytes",
            ),
            (
                r#""a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,24]}"#,
                "tensor `a` has shape [4294967296, 4294967296, 4], too large to count its bytes",
            ),
            // Offsets and sides that are no whole numbers, and a short last tensor, which
            // leaves bytes after it: the tensor is named, not the bytes over.
            (
                r#""a":{"dtype":"F32","shape":[2],"data_offsets":[-4,4]},"b":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}"#,
                "tensor `a` has data_offsets [-4,4], not two whole numbers ≥ 0 (start, end)",
            ),
            (
                r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}"#,
                "tensor `a` has data_offsets [0.0,8], not two whole numbers ≥ 0",
            ),
            (
                r#""a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}"#,
                "tensor `a` has shape [2.5], not a list of whole numbers ≥ 0",
            ),
            (
                r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,20]}"#,
                "tensor `b` is F32 of shape [4], 16 bytes, but its data_offsets [8, 20] hold 12",
            ),
        ];
        for (entries, want) in cases {
            let e = TensorFile::from_bytes(Path::new("x.safetensors"), &crafted(entries)).expect_err(want);
            assert!(e.to_string().contains(want), "{entries}\n  got: {e}\n want: {want}");
        }
    }
}
