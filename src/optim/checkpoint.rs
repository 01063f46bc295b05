//! Reading an optimizer's state back and rolling it back: AdamW's moments, and checkpoints
//! of parameters, moments and step counts kept on the device.

use super::Optimizer;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// An optimizer's state at one moment, on the device: copies of the parameters and of the
/// AdamW moments, and the step counts (see [`Optimizer::checkpoint`]).
#[derive(Debug)]
pub struct OptimizerCheckpoint {
    /// The optimizer it was taken of.
    optimizer: u64,
    params: Vec<Tensor>,
    moments: Option<(Tensor, Tensor)>,
    updates: Vec<u64>,
    steps: u64,
}

impl Optimizer {
    /// Reads back AdamW's first and second moments `(m, v)` of parameter `index` (submits and
    /// waits; for checkpoints and tests, not for the training loop). `None` for SGD.
    pub fn moments(&self, index: usize) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some(p) = self.params.get(index) else {
            return Err(Error::invalid(
                "optimizer parameter index",
                format!("{index}, but there are {} parameters", self.params.len()),
            ));
        };
        let Some(m) = &self.moments else { return Ok(None) };
        let range = self.starts[index]..self.starts[index] + p.len();
        let exp_avg = self.gpu.read(&m.exp_avg)?[range.clone()].to_vec();
        let exp_avg_sq = self.gpu.read(&m.exp_avg_sq)?[range].to_vec();
        Ok(Some((exp_avg, exp_avg_sq)))
    }

    /// Records copies of the parameters and moments (device to device, nothing waits), to
    /// undo later steps with [`restore`](Self::restore): a training loop that checks each
    /// loss only after the next step has been submitted rolls back a step whose loss turned
    /// out non-finite. Costs three times the parameters' size for AdamW, twice for SGD.
    pub fn checkpoint(&self) -> Result<OptimizerCheckpoint> {
        let params = self.params.iter().map(|p| p.deep_copy(&self.gpu)).collect::<Result<Vec<_>>>()?;
        let moments = match &self.moments {
            Some(m) => Some((m.exp_avg.deep_copy(&self.gpu)?, m.exp_avg_sq.deep_copy(&self.gpu)?)),
            None => None,
        };
        Ok(OptimizerCheckpoint {
            optimizer: self.id,
            params,
            moments,
            updates: self.updates.clone(),
            steps: self.steps,
        })
    }

    /// Records writing a checkpoint of this optimizer back: parameters in place (every clone
    /// of a parameter tensor sees the old values again), moments and step counts. A
    /// checkpoint of another optimizer is refused; a tape that recorded the parameters before
    /// refuses its backward pass (as after [`Optimizer::step`]).
    pub fn restore(&mut self, checkpoint: &OptimizerCheckpoint) -> Result<()> {
        if checkpoint.optimizer != self.id {
            return Err(Error::invalid("optimizer restore", "the checkpoint is of another optimizer"));
        }
        for (c, p) in checkpoint.params.iter().zip(&self.params) {
            self.gpu.copy(c, 0, p, 0, p.len());
            p.mark_changed();
        }
        if let (Some((m, v)), Some(mine)) = (&checkpoint.moments, &self.moments) {
            self.gpu.copy(m, 0, &mine.exp_avg, 0, m.len());
            self.gpu.copy(v, 0, &mine.exp_avg_sq, 0, v.len());
        }
        self.updates.clone_from(&checkpoint.updates);
        self.steps = checkpoint.steps;
        Ok(())
    }
}
