//! One training step: the gradients of a batch, in pieces where the device takes fewer
//! images at once, and the check of each step's loss that undoes a bad update.

use super::{StepReport, upload_batch};
use crate::adapters::Adapter;
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, PendingRead};
use crate::io::Dataset;
use crate::nn::Vit;
use crate::ops::elementwise::{add, add_var, scale_var};
use crate::ops::loss::cross_entropy_var;
use crate::optim::{Optimizer, OptimizerCheckpoint};
use crate::tensor::Tensor;

/// What a training run reads, and the most images it computes at once.
pub(super) struct Run<'a> {
    pub gpu: &'a Gpu,
    pub vit: &'a Vit,
    pub adapter: &'a Adapter,
    pub data: &'a Dataset,
    pub at_once: usize,
}

impl Run<'_> {
    /// The loss of the batch `rows` at `(step, steps, seed)` (mean cross-entropy plus the
    /// route term) and the gradient of each of `optimizer`'s parameters (`None` where it has
    /// none), computed [`at_once`](Run::at_once) images at a time: each piece's mean
    /// cross-entropy weighted by its share of the batch, the route term with the first, and
    /// the gradients of the pieces summed. LoRA's dropout masks are drawn from `seed` over the
    /// whole batch ([`Adapter::bind_train_part`]), so the pieces draw what the batch would.
    pub fn gradients(
        &self,
        optimizer: &Optimizer,
        rows: &[usize],
        (step, steps, seed): (usize, usize, u64),
    ) -> Result<(Tensor, Vec<Option<Tensor>>)> {
        let mut loss_sum: Option<Tensor> = None;
        let mut sums: Vec<Option<Tensor>> = vec![None; optimizer.params().len()];
        for (k, piece) in rows.chunks(self.at_once.max(1)).enumerate() {
            let (images, labels) = upload_batch(self.gpu, self.data, piece)?;
            let mut tape = Tape::new(self.gpu);
            let base = self.vit.bind(&mut tape, false);
            let first = k * self.at_once.max(1);
            let bound = self.adapter.bind_train_part(&mut tape, seed, first..first + piece.len());
            let images = tape.constant(&images);
            let logits = self.vit.forward(&mut tape, &base, &images, &bound)?;
            let mut loss = cross_entropy_var(&mut tape, &logits, &labels)?;
            if piece.len() < rows.len() {
                loss = scale_var(&mut tape, &loss, (piece.len() as f64 / rows.len() as f64) as f32)?;
            }
            if k == 0
                && let Some(term) = bound.regularizer(&mut tape, step, steps)?
            {
                loss = add_var(&mut tape, &loss, &term)?;
            }
            let vars = bound.vars().to_vec();
            drop(bound);
            optimizer.check_leaves(&vars.iter().collect::<Vec<&Var>>())?;
            loss_sum = Some(match loss_sum {
                None => loss.value().clone(),
                Some(sum) => add(self.gpu, &sum, loss.value())?,
            });
            let grads = tape.backward(&loss)?;
            for (sum, g) in sums.iter_mut().zip(grads.of(&vars)?) {
                *sum = match (sum.take(), g) {
                    (None, g) => g.cloned(),
                    (Some(s), None) => Some(s),
                    (Some(s), Some(g)) => Some(add(self.gpu, &s, g)?),
                };
            }
        }
        let loss = loss_sum.ok_or_else(|| Error::invalid("batch", "has no images"))?;
        Ok((loss, sums))
    }

    /// What is wrong with the adapter's parameters as an update left them, checked on the
    /// batch `rows` that update came from: non-finite values, or a non-finite loss on that
    /// batch (huge but finite values overflow in the forward pass); `None` when neither.
    pub fn update_fault(&self, rows: &[usize]) -> Result<Option<String>> {
        for p in self.adapter.trainable() {
            if !self.gpu.read(&p.tensor)?.iter().all(|x| x.is_finite()) {
                return Ok(Some(format!("`{}` holds non-finite values", p.key)));
            }
        }
        let value = self.inference_loss(rows)?;
        Ok((!value.is_finite()).then(|| format!("the loss on its batch is then {value}")))
    }

    /// Mean cross-entropy of the adapted model on `rows`, without recording anything, in
    /// pieces of [`at_once`](Run::at_once) images as training computes them.
    fn inference_loss(&self, rows: &[usize]) -> Result<f32> {
        let mut sum = 0.0f64;
        for piece in rows.chunks(self.at_once.max(1)) {
            let (images, labels) = upload_batch(self.gpu, self.data, piece)?;
            let mut tape = Tape::inference(self.gpu);
            let base = self.vit.bind(&mut tape, false);
            let images = tape.constant(&images);
            let bound = self.adapter.bind(&mut tape);
            let logits = self.vit.forward(&mut tape, &base, &images, &bound)?;
            let loss = cross_entropy_var(&mut tape, &logits, &labels)?;
            sum += f64::from(self.gpu.read(loss.value())?[0]) * piece.len() as f64;
        }
        Ok((sum / rows.len().max(1) as f64) as f32)
    }
}

/// A step submitted but not yet checked: its report (without the loss), the read of its
/// loss, the optimizer's state before its update and its batch.
pub(super) struct InFlight {
    pub report: StepReport,
    pub read: PendingRead,
    pub before: OptimizerCheckpoint,
    pub rows: Vec<usize>,
}

/// Reads a step's loss and reports it, returning the state before the step and its batch. A
/// non-finite loss fails, undoing the step's update and any after it; and the previous
/// step's too (back to `last_good`) when that update is at fault (the parameters it made are
/// not sound on its own batch, [`Run::update_fault`]) rather than this step's images.
pub(super) fn finish_step(
    run: &Run<'_>,
    optimizer: &mut Optimizer,
    step: InFlight,
    last_good: Option<&(OptimizerCheckpoint, Vec<usize>)>,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(OptimizerCheckpoint, Vec<usize>)> {
    let InFlight { mut report, read, before, rows } = step;
    let value = read.wait()?[0];
    if !value.is_finite() {
        optimizer.restore(&before)?;
        if let Some((good, good_rows)) = last_good
            && run.update_fault(good_rows)?.is_some()
        {
            optimizer.restore(good)?;
        }
        run.gpu.sync()?;
        return Err(Error::NonFiniteLoss { step: report.step, value });
    }
    report.loss = value;
    on_step(&report);
    Ok((before, rows))
}
