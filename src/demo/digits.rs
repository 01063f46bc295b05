//! scikit-learn's 8×8 handwritten digits (1,797 images, CC BY 4.0), embedded in the binary
//! from `data/digits.safetensors` (made by `scripts/make_digits.py`: `images` u8
//! `[N, 1, 8, 8]` with values 0‥16, `labels` u8 `[N]`), normalised and split for the demo.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{Dataset, TensorFile};

/// The raw file, as committed.
const DIGITS: &[u8] = include_bytes!("../../data/digits.safetensors");

/// Name of the embedded file in messages.
const NAME: &str = "<embedded>/data/digits.safetensors";

/// Every image with `i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1`, where `i` counts the images of
/// its digit in file order, is held out: one image of each digit in five. (The file cycles
/// through the digits, so counting over all of a task's images would hold out mostly one digit.)
pub const HELD_OUT_EVERY: usize = 5;

/// Which half of the digits, and with which labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Digits 0–4, labelled 0–4: what the embedded model was pretrained on.
    Pretrain,
    /// Digits 5–9, relabelled 0–4: what the demo fine-tunes on.
    FineTune,
}

/// Which rows of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The images used for training (four in five).
    Train,
    /// The images never trained on (one in five).
    HeldOut,
}

/// One split of the digits: pixels `p / 16` standardised with the mean and standard deviation
/// of all 1,797 images' pixels, so every split shares one normalisation.
pub fn split(task: Task, part: Part) -> Result<Dataset> {
    let file = TensorFile::from_bytes(Path::new(NAME), DIGITS)?;
    let (shape, raw) = file.integers("images")?;
    let (label_shape, labels) = file.integers("labels")?;
    let &[n, 1, 8, 8] = shape.as_slice() else {
        return Err(Error::invalid(NAME, format!("`images` has shape {shape:?}, expected [N, 1, 8, 8]")));
    };
    if label_shape != [n] {
        return Err(Error::invalid(NAME, format!("`labels` has shape {label_shape:?}, expected [{n}]")));
    }
    let scaled: Vec<f64> = raw.iter().map(|&v| v as f64 / 16.0).collect();
    let (mean, std) = mean_std(&scaled);
    let (first, offset) = match task {
        Task::Pretrain => (0, 0),
        Task::FineTune => (5, 5),
    };
    let mut pixels = Vec::new();
    let mut out_labels = Vec::new();
    let mut seen = [0usize; 10];
    for (row, &label) in labels.iter().enumerate() {
        if !(first..first + 5).contains(&label) {
            continue;
        }
        let index = &mut seen[label as usize];
        let held_out = *index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1;
        *index += 1;
        if held_out != (part == Part::HeldOut) {
            continue;
        }
        pixels.extend(scaled[row * 64..(row + 1) * 64].iter().map(|v| ((v - mean) / std) as f32));
        out_labels.push((label - offset) as u32);
    }
    let rows = out_labels.len();
    Dataset::from_parts(Path::new(NAME), [rows, 1, 8, 8], pixels, out_labels)
}

/// The first `limit` rows of `data` (all of them when `limit` is `None` or larger).
pub fn take(data: Dataset, limit: Option<usize>) -> Result<Dataset> {
    match limit {
        Some(k) if k < data.len() => {
            let rows: Vec<usize> = (0..k).collect();
            let (pixels, labels) = data.gather(&rows)?;
            let [_, c, h, w] = data.shape;
            Dataset::from_parts(data.path(), [k, c, h, w], pixels, labels)
        }
        _ => Ok(data),
    }
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (mean, (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt())
}

/// `data` followed by four copies of it shifted by one pixel (left, right, up, down), the
/// uncovered edge filled with the background (the smallest value in `data`: a 0 pixel's). Used to
/// pretrain features that do not depend on the exact position of a stroke.
pub fn with_shifts(data: &Dataset) -> Result<Dataset> {
    let [n, c, h, w] = data.shape;
    let background = data.pixels.iter().copied().fold(f32::INFINITY, f32::min);
    let mut pixels = data.pixels.clone();
    for (dy, dx) in [(0i64, -1i64), (0, 1), (-1, 0), (1, 0)] {
        for image in data.pixels.chunks(c * h * w) {
            for plane in image.chunks(h * w) {
                for y in 0..h as i64 {
                    for x in 0..w as i64 {
                        let (sy, sx) = (y - dy, x - dx);
                        let inside = (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx);
                        pixels.push(if inside { plane[(sy * w as i64 + sx) as usize] } else { background });
                    }
                }
            }
        }
    }
    let labels = data.labels.repeat(5);
    Dataset::from_parts(data.path(), [5 * n, c, h, w], pixels, labels)
}
