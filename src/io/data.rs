//! Data sets (SPEC §10): a safetensors file with `pixel_values` `[N, C, H, W]` (float,
//! already normalised) and `labels` `[N]` (i64, i32 or u8).

use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::safetensors::{HostTensor, RawTensor, TensorFile, serialize_raw, unravel};
use crate::error::{Error, Result};

/// Fails unless `file` holds both tensors of a data set, naming what it holds instead.
fn check_keys(file: &TensorFile) -> Result<()> {
    let missing: Vec<&str> = ["pixel_values", "labels"].into_iter().filter(|k| !file.contains(k)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = file.keys().take(3).map(|k| format!("`{k}`")).collect();
    let holds = match file.keys().count() {
        0 => "no tensors".to_string(),
        n if n > keys.len() => format!("{}, …", keys.join(", ")),
        _ => keys.join(", "),
    };
    Err(Error::Format {
        path: file.path().to_path_buf(),
        message: format!(
            "is not a data set: it has no `{}` (it holds {holds}; a data set holds float \
             `pixel_values` [N, C, H, W] and integer `labels` [N])",
            missing.join("` and no `"),
        ),
    })
}

/// Bytes of the f32 copy of `pixel_values` when the file at `path` stores them as another
/// float type, from its header alone; `None` for F32 (used where it lies) or a header the
/// full reader will explain.
fn converted_pixel_bytes(path: &Path) -> Option<u64> {
    let header = super::safetensors::header_json(path)?;
    let pixels = header.get("pixel_values")?;
    if pixels.get("dtype")?.as_str()? == "F32" {
        return None;
    }
    let shape = pixels.get("shape")?.as_array()?;
    shape.iter().try_fold(4u64, |n, d| n.checked_mul(d.as_u64()?))
}

/// Images and labels on the host.
#[derive(Clone)]
pub struct Dataset {
    path: PathBuf,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Pixel values, row-major.
    pub pixels: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u32>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset").field("path", &self.path).field("shape", &self.shape).finish_non_exhaustive()
    }
}

impl Dataset {
    /// Reads and validates a data file: both tensors present, 4-D pixels, one label per
    /// image, labels non-negative, every pixel finite, at least one image. F32 pixels are
    /// taken where they lie in the file's memory, so the file is held once.
    pub fn load(path: &Path) -> Result<Dataset> {
        // Pixels stored as F16, BF16 or F64 are converted beside the file's bytes: both must
        // fit before the file is read.
        if let (Some(extra), Ok(meta)) = (converted_pixel_bytes(path), std::fs::metadata(path)) {
            crate::io::memory::check_available(path, meta.len().saturating_add(extra))?;
        }
        let file = TensorFile::open(path)?;
        check_keys(&file)?;
        let labels = file.integers("labels")?;
        let from_f64 = file.dtype("pixel_values") == Some(Dtype::F64);
        Dataset::from_tensors(path, file.into_f32_any("pixel_values")?, labels, from_f64)
    }

    /// Validates an opened data file (see [`Dataset::load`]).
    pub fn from_file(file: &TensorFile) -> Result<Dataset> {
        check_keys(file)?;
        let labels = file.integers("labels")?;
        let from_f64 = file.dtype("pixel_values") == Some(Dtype::F64);
        Dataset::from_tensors(file.path(), file.f32_any("pixel_values")?, labels, from_f64)
    }

    /// The data set of `pixels` and the integer `labels` (shape and values) read from `path`,
    /// the pixels converted from F64 when `from_f64`.
    fn from_tensors(
        path: &Path,
        pixels: HostTensor,
        (label_shape, raw): (Vec<usize>, Vec<i64>),
        from_f64: bool,
    ) -> Result<Dataset> {
        let bad = |key: &str, expected: &str, got: String| Error::TensorMismatch {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            got,
        };
        let format = |message: String| Error::Format { path: path.to_path_buf(), message };
        let [n, c, h, w] = <[usize; 4]>::try_from(pixels.shape.as_slice())
            .map_err(|_| bad("pixel_values", "shape [N, C, H, W]", format!("shape {:?}", pixels.shape)))?;
        check_finite(path, &pixels.data, &pixels.shape, 0).map_err(|e| match e {
            // An F64 value beyond f32's range reads as an infinity (a NaN is a NaN in any type).
            Error::Format { path, message }
                if from_f64 && pixels.data.iter().find(|v| !v.is_finite()).is_some_and(|v| v.is_infinite()) =>
            {
                let message = format!("{message} (F64 values beyond f32's range read as inf)");
                Error::Format { path, message }
            }
            e => e,
        })?;
        if label_shape != [n] {
            return Err(bad("labels", &format!("shape [{n}] (one per image)"), format!("shape {label_shape:?}")));
        }
        if n == 0 || c * h * w == 0 {
            return Err(format(format!("holds no pixels: `pixel_values` has shape {:?}", pixels.shape)));
        }
        let labels = raw
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                u32::try_from(l).map_err(|_| format(format!("`labels[{i}]` = {l} is not a valid class index")))
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Dataset { path: path.to_path_buf(), shape: [n, c, h, w], pixels: pixels.data, labels })
    }

    /// Writes the data set to `path` in the format [`Dataset::load`] reads (`pixel_values`
    /// f32, `labels` i64), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_whole()?;
        check_finite(&self.path, &self.pixels, &self.shape, 0)?;
        let labels: Vec<u8> = self.labels.iter().flat_map(|&l| i64::from(l).to_le_bytes()).collect();
        let tensors = [
            RawTensor { key: "labels", dtype: "I64", shape: &[self.labels.len()], bytes: &labels },
            RawTensor {
                key: "pixel_values",
                dtype: "F32",
                shape: &self.shape,
                bytes: bytemuck::cast_slice(&self.pixels),
            },
        ];
        super::atomic::write(path, &serialize_raw(path, &tensors, None)?)
    }

    /// A data set from memory (`path` names it in messages).
    pub fn from_parts(path: &Path, shape: [usize; 4], pixels: Vec<f32>, labels: Vec<u32>) -> Result<Dataset> {
        let data = Dataset { path: path.to_path_buf(), shape, pixels, labels };
        data.check_whole()?;
        check_finite(path, &data.pixels, &shape, 0)?;
        Ok(data)
    }

    /// Fails unless there is at least one image and the pixels and labels agree with the
    /// shape (the fields are public, so a dataset changed in code is checked again).
    fn check_whole(&self) -> Result<()> {
        let n = self.shape[0];
        let pixels = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let consistent = self.labels.len() == n && pixels == Some(self.pixels.len());
        if n == 0 || self.shape[1..].contains(&0) || !consistent {
            let message = if n == 0 {
                "holds no images"
            } else if !consistent {
                "pixel and label counts disagree with its shape"
            } else {
                "holds no pixels: its images have a side of 0"
            };
            return Err(Error::Format { path: self.path.clone(), message: message.into() });
        }
        Ok(())
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Fails unless images are `channels × height × width`, every pixel is finite (the pixels
    /// are public: values changed in code are caught here, before a run starts) and every
    /// label is below `num_labels`.
    pub fn check_fits(&self, channels: usize, [height, width]: [usize; 2], num_labels: usize) -> Result<()> {
        self.check_whole()?;
        check_finite(&self.path, &self.pixels, &self.shape, 0)?;
        let [_, c, h, w] = self.shape;
        if (c, h, w) != (channels, height, width) {
            return Err(Error::TensorMismatch {
                path: self.path.clone(),
                key: "pixel_values".into(),
                expected: format!(
                    "images of {channels}×{height}×{width} (the model's num_channels × image height × width)"
                ),
                got: format!("{c}×{h}×{w}"),
            });
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|&(_, &l)| l as usize >= num_labels) {
            return Err(Error::Format {
                path: self.path.clone(),
                message: format!(
                    "`labels[{i}]` = {l} is out of range for a classifier with {num_labels} labels (0 to {})",
                    num_labels.saturating_sub(1)
                ),
            });
        }
        Ok(())
    }

    /// The pixels and labels of images `rows`, in that order; an error naming the first row
    /// beyond the data.
    pub fn gather(&self, rows: &[usize]) -> Result<(Vec<f32>, Vec<u32>)> {
        self.check_whole()?;
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        let room = pixels.try_reserve_exact(rows.len().saturating_mul(per)).and(labels.try_reserve_exact(rows.len()));
        room.map_err(|_| {
            // The host ran short (the data file fills most of `ulimit -v`, say), not the flag.
            let message = format!(
                "a batch of {} images of {per} values ({} bytes) does not fit beside the data in this process's \
                 memory",
                rows.len(),
                (rows.len() as u128) * (per as u128 + 1) * 4
            );
            Error::Io { path: self.path.clone(), source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, message) }
        })?;
        for &r in rows {
            let range = r.checked_mul(per).and_then(|start| Some(start..start.checked_add(per)?));
            let (Some(image), Some(&label)) = (range.and_then(|range| self.pixels.get(range)), self.labels.get(r))
            else {
                return Err(Error::invalid(
                    "rows",
                    format!("row {r} of {}, which holds {} images", self.path.display(), self.len()),
                ));
            };
            // The pixels are public: values changed in code since the checks are caught here
            // too (`check_fits` finds them before a run).
            check_finite(&self.path, image, &[1, self.shape[1], self.shape[2], self.shape[3]], r)?;
            pixels.extend_from_slice(image);
            labels.push(label);
        }
        Ok((pixels, labels))
    }
}

/// Fails naming the first non-finite value of `pixels` (`[N, C, H, W]`, its first image
/// being image `first` of the data set read from `path`).
fn check_finite(path: &Path, pixels: &[f32], shape: &[usize], first: usize) -> Result<()> {
    let Some(i) = pixels.iter().position(|v| !v.is_finite()) else { return Ok(()) };
    let [img, ch, y, x] = <[usize; 4]>::try_from(unravel(i, shape)).unwrap_or_default();
    Err(Error::Format {
        path: path.to_path_buf(),
        message: format!(
            "`pixel_values` of image {} is {} at channel {ch}, row {y}, column {x}; pixel values must be finite",
            first + img,
            pixels[i]
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_of_every_float_dtype_load_wherever_they_lie_in_the_file() {
        let dir = std::env::temp_dir().join(format!("peft-wgpu-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("d.safetensors");
        // Values every dtype holds exactly; labels as three U8s come first, so the pixels
        // start 3 bytes into the data section, not on a 4-byte boundary.
        let values = [0.5f32, -1.25, 3.0, 0.0, -0.75, 2.5];
        let encoded: [(&str, Vec<u8>); 4] = [
            ("F32", values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("F64", values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect()),
            // Half and bfloat16 bit patterns of the same values.
            ("F16", [0x3800u16, 0xBD00, 0x4200, 0x0000, 0xBA00, 0x4100].iter().flat_map(|h| h.to_le_bytes()).collect()),
            ("BF16", values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect()),
        ];
        for (dtype, bytes) in &encoded {
            let tensors = [
                RawTensor { key: "labels", dtype: "U8", shape: &[3], bytes: &[2, 0, 1] },
                RawTensor { key: "pixel_values", dtype, shape: &[3, 1, 1, 2], bytes },
            ];
            std::fs::write(&path, serialize_raw(&path, &tensors, None).expect("serialize")).expect("write");
            let data = Dataset::load(&path).expect(dtype);
            assert_eq!(data.pixels, values, "{dtype}");
            assert_eq!((data.shape, data.labels.as_slice()), ([3, 1, 1, 2], [2, 0, 1].as_slice()), "{dtype}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
