//! Evaluation: accuracy, mean loss and logits of a model on a data set, in batches that fit
//! the device, and the checks that find which image makes a loss non-finite.

use std::ops::Range;

use super::{Refusals, check_device, check_inputs, upload_batch};
use crate::adapters::Adapter;
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::nn::{Vit, VitHooks};
use crate::ops::loss::cross_entropy_rows;

/// Of `rows`, the first image whose logits (with `adapter`) are not finite, with the first
/// such logit: what makes a loss non-finite before any update.
pub fn first_non_finite_image(
    gpu: &Gpu,
    vit: &Vit,
    adapter: Option<&Adapter>,
    data: &Dataset,
    rows: &[usize],
) -> Result<Option<(usize, f32)>> {
    in_pieces(rows.len(), rows.len(), |range| {
        let piece = &rows[range];
        let (_, _, logits) = eval_batch(gpu, vit, adapter, data, piece)?;
        let labels = (logits.len() / piece.len().max(1)).max(1);
        Ok(logits.iter().position(|v| !v.is_finite()).map(|i| (piece[i / labels], logits[i])))
    })
}

/// Calls `f` on consecutive ranges covering `0..n`, `at_once` long (the last shorter) or
/// shorter where the device refuses a piece for its size: more images at once than its grid
/// takes (batch × heads past its workgroups per axis) or than one of its buffers holds (an
/// MLP activation, the logits), which the same images in smaller pieces avoid
/// ([`Refusals`]). The first `Some` that `f` returns ends the walk and is returned.
fn in_pieces<T>(n: usize, at_once: usize, mut f: impl FnMut(Range<usize>) -> Result<Option<T>>) -> Result<Option<T>> {
    let (mut start, mut at_once) = (0, at_once.max(1));
    let mut refusals = Refusals::default();
    while start < n {
        let range = start..(start + at_once).min(n);
        match f(range.clone()) {
            Err(e) if refusals.retry_smaller(&e, range.len()) => at_once = range.len() / 2,
            Ok(None) => start = range.end,
            other => return other,
        }
    }
    Ok(None)
}

/// Whether the model without any adapter gives image `image` finite logits: when it does and
/// the adapted model does not, the adapter is at fault.
pub fn finite_without_adapter(gpu: &Gpu, vit: &Vit, data: &Dataset, image: usize) -> Result<bool> {
    let (_, _, logits) = eval_batch(gpu, vit, None, data, &[image])?;
    Ok(logits.iter().all(|v| v.is_finite()))
}

/// Accuracy and loss of a model on a data set.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Fraction of images whose arg-max logit is their label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub mean_loss: f64,
    /// Images evaluated.
    pub images: usize,
    /// Logits `[images, labels]`, row-major, when kept ([`evaluate`] keeps them,
    /// [`evaluate_with_progress`] when asked to); empty otherwise.
    pub logits: Vec<f32>,
    /// Labels of the classifier.
    pub labels: usize,
    /// The first logit that is not finite, as (image, value): the accuracy and the loss are
    /// then meaningless.
    pub first_non_finite: Option<(usize, f32)>,
}

/// Evaluates `vit` (with `hooks`, e.g. a bound adapter, made per batch by `bind`) on `data`,
/// keeping the logits. `batch_size` images go through the model at once, or fewer where the
/// device's grid cannot take that many (batch × heads past its workgroups per axis, 65,535
/// on most) or one of its buffers cannot hold a batch's tensor: the results are the same.
pub fn evaluate(
    gpu: &Gpu,
    vit: &Vit,
    adapter: Option<&Adapter>,
    data: &Dataset,
    batch_size: usize,
) -> Result<EvalReport> {
    evaluate_with_progress(gpu, vit, adapter, data, batch_size, true, &mut |_, _| {})
}

/// [`evaluate`], keeping the logits only when `keep_logits` (they take `images × labels`
/// floats of host memory; an error says so when that cannot be had), and telling `on_batch`
/// how many images of how many are done: 0 before the first batch, then after each.
pub fn evaluate_with_progress(
    gpu: &Gpu,
    vit: &Vit,
    adapter: Option<&Adapter>,
    data: &Dataset,
    batch_size: usize,
    keep_logits: bool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    let labels = adapter.map_or(vit.config.num_labels, Adapter::num_labels);
    check_inputs(vit, labels, data, batch_size)?;
    check_device(gpu, vit, adapter)?;
    if let Some(a) = adapter {
        a.check_model("evaluate", &vit.config)?;
    }
    let (mut correct, mut loss) = (0.0f64, 0.0f64);
    let mut logits_all = Vec::new();
    if keep_logits {
        let n = data.len().saturating_mul(labels);
        logits_all.try_reserve_exact(n).map_err(|_| {
            Error::invalid(
                "evaluation",
                format!(
                    "keeping the logits of {} images × {labels} labels needs {} bytes of memory, which this \
                     machine cannot give; evaluate fewer images at a time (split the data file)",
                    data.len(),
                    (n as u128) * 4
                ),
            )
        })?;
    }
    let mut first_non_finite = None;
    on_batch(0, data.len());
    in_pieces(data.len(), batch_size, |range| {
        let rows: Vec<usize> = range.clone().collect();
        let (batch_loss, batch_correct, batch_logits) = eval_batch(gpu, vit, adapter, data, &rows)?;
        loss += batch_loss;
        correct += batch_correct;
        if first_non_finite.is_none()
            && let Some(i) = batch_logits.iter().position(|v| !v.is_finite())
        {
            first_non_finite = Some((range.start + i / labels.max(1), batch_logits[i]));
        }
        if keep_logits {
            logits_all.extend(batch_logits);
        }
        on_batch(range.end, data.len());
        Ok(None::<()>)
    })?;
    let n = data.len() as f64;
    Ok(EvalReport {
        accuracy: correct / n,
        mean_loss: loss / n,
        images: data.len(),
        logits: logits_all,
        labels,
        first_non_finite,
    })
}

/// The summed loss, the number of hits and the logits of images `rows`.
fn eval_batch(
    gpu: &Gpu,
    vit: &Vit,
    adapter: Option<&Adapter>,
    data: &Dataset,
    rows: &[usize],
) -> Result<(f64, f64, Vec<f32>)> {
    let (images, labels) = upload_batch(gpu, data, rows)?;
    let mut tape = Tape::inference(gpu);
    let base = vit.bind(&mut tape, false);
    let images = tape.constant(&images);
    let logits = match adapter {
        Some(a) => {
            let bound = a.bind(&mut tape);
            vit.forward(&mut tape, &base, &images, &bound)?
        }
        None => vit.forward(&mut tape, &base, &images, &crate::nn::NoHooks as &dyn VitHooks)?,
    };
    let (losses, hits) = cross_entropy_rows(gpu, logits.value(), &labels)?;
    let loss = gpu.read(&losses)?.iter().map(|&v| f64::from(v)).sum::<f64>();
    let correct = gpu.read(&hits)?.iter().map(|&v| f64::from(v)).sum::<f64>();
    Ok((loss, correct, gpu.read(logits.value())?))
}
