//! A file's bytes held in 4-byte words, so that an F32 tensor inside can become a `Vec<f32>`
//! where it lies ([`Contents::into_f32`]) instead of being copied: a data set's pixels, most
//! of its file, then need the file's size in memory once, not twice.

use std::io::Read;
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::memory;

/// The bytes of a file, in words.
pub(super) struct Contents {
    words: Vec<f32>,
    len: usize,
}

impl Contents {
    /// The `len` bytes of the regular file `file`, whose first ones (`start`, at most `len`)
    /// were read already; `start` is let go before the rest is read.
    pub(super) fn read(path: &Path, file: &mut std::fs::File, start: Vec<u8>, len: u64) -> Result<Contents> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut contents = Contents::zeroed(path, len)?;
        let bytes = contents.bytes_mut();
        bytes[..start.len()].copy_from_slice(&start);
        let rest = &mut bytes[start.len()..];
        drop(start);
        // A file that shrank since its size was read ends early: an error naming it.
        file.read_exact(rest).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(contents)
    }

    /// A copy of `bytes` (read from `path`).
    pub(super) fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Contents> {
        let mut contents = Contents::zeroed(path, bytes.len())?;
        contents.bytes_mut().copy_from_slice(bytes);
        Ok(contents)
    }

    /// `len` zero bytes, reserved through [`memory::reserve`] so that too many are an error
    /// naming `path`.
    fn zeroed(path: &Path, len: usize) -> Result<Contents> {
        let n = len.div_ceil(4);
        let mut words = memory::reserve::<f32>(path, n)?;
        words.resize(n, 0.0);
        Ok(Contents { words, len })
    }

    /// The bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    /// Keeps the first `len` bytes and gives the memory of the rest back (where the allocator
    /// shrinks a block in place, as glibc does for large ones, without a copy).
    pub(super) fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.words.truncate(len.div_ceil(4));
            self.words.shrink_to_fit();
            self.len = len;
        }
    }

    /// The little-endian f32 values at byte range `at` (a whole number of them), moved to the
    /// front of the words and returned in them; the rest of the file is let go.
    pub(super) fn into_f32(mut self, at: Range<usize>) -> Vec<f32> {
        let n = at.len() / 4;
        self.bytes_mut().copy_within(at, 0);
        let mut values = self.words;
        values.truncate(n);
        values.shrink_to_fit();
        if cfg!(target_endian = "big") {
            values.iter_mut().for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_values_are_taken_from_any_byte_offset() {
        let values = [1.5f32, -2.0, f32::MIN_POSITIVE, 7.25];
        for offset in 0..8 {
            let mut bytes = vec![0xAB; offset];
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            bytes.extend([1, 2, 3]);
            let contents = Contents::from_bytes(Path::new("x.safetensors"), &bytes).expect("small");
            assert_eq!(contents.bytes(), bytes.as_slice());
            assert_eq!(contents.into_f32(offset..offset + 16), values, "offset {offset}");
        }
    }
}
