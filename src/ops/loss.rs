//! Cross-entropy with integer labels (`shaders/loss.wgsl`).
//!
//! Labels must be `< classes`. Check them on the host where they are read, with
//! [`check_labels`]: the kernels never index with a label out of range (such a row gets a
//! NaN loss and a NaN gradient, so training on it cannot go on quietly), but they cannot
//! report which label was bad.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/loss.wgsl` (`LossParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LossParams {
    /// Rows (examples).
    pub rows: u32,
    /// Classes (the last axis of the logits).
    pub classes: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
}

/// Fails naming the first label that is not `< classes`.
pub fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&t| t as usize >= classes) {
        None => Ok(()),
        Some(i) => {
            Err(Error::invalid(format!("label {i}"), format!("{} is out of range for {classes} classes", labels[i])))
        }
    }
}

fn params(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<LossParams> {
    let s = logits.shape();
    let ok = logits.dtype() == DType::F32 && s.len() == 2 && s[0] > 0 && s[1] > 0;
    if !ok || labels.dtype() != DType::U32 || labels.shape() != [s[0]] {
        return Err(Error::shape(
            op,
            "f32 logits [rows, classes] and u32 labels [rows]",
            format!("logits {logits:?}, labels {labels:?}"),
        ));
    }
    Ok(LossParams { rows: s[0] as u32, classes: s[1] as u32, ..Default::default() })
}

/// Per-row results of the `cross_entropy_rows` kernel.
struct Rows {
    loss: Tensor,
    lse: Tensor,
    correct: Tensor,
}

fn cross_entropy_rows_full(gpu: &Gpu, logits: &Tensor, labels: &Tensor) -> Result<Rows> {
    let p = params("cross_entropy", logits, labels)?;
    let n = p.rows as usize;
    let loops = Gpu::row_loops(2, p.classes as usize, 2);
    gpu.check_loops(|| format!("cross_entropy over {} classes", p.classes), loops)?;
    let loss = Tensor::uninit(gpu, &[n], DType::F32)?;
    let lse = Tensor::uninit(gpu, &[n], DType::F32)?;
    let correct = Tensor::uninit(gpu, &[n], DType::F32)?;
    gpu.dispatch(Kernel::CrossEntropyRows, &[logits, labels], &[&loss, &lse, &correct], &p, gpu.grid_1d(n, 1))?;
    Ok(Rows { loss, lse, correct })
}

/// Per-row loss `−log softmax(logits[n])[labels[n]]` (`[rows]`) and whether the row's
/// arg-max (its first maximal index) equals its label, as `1.0`/`0.0` (`[rows]`). For
/// evaluation; no gradient. A label `≥ classes` gives a NaN loss and `0.0`.
pub fn cross_entropy_rows(gpu: &Gpu, logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let rows = cross_entropy_rows_full(gpu, logits, labels)?;
    Ok((rows.loss, rows.correct))
}

/// Mean cross-entropy `(1/N)·Σ_n (logsumexp(logits[n]) − logits[n, labels[n]])` as `[1]`,
/// with the per-row log-sum-exp (`[rows]`) its backward pass uses.
pub fn cross_entropy(gpu: &Gpu, logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let rows = cross_entropy_rows_full(gpu, logits, labels)?;
    Ok((sum::mean_all(gpu, &rows.loss)?, rows.lse))
}

/// `∂logits = (softmax(logits) − onehot(labels))·∂loss/N`, with `softmax = exp(logits − lse)`.
pub fn cross_entropy_backward(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    lse: &Tensor,
    dloss: &Tensor,
) -> Result<Tensor> {
    let p = params("cross_entropy_backward", logits, labels)?;
    if lse.shape() != [p.rows as usize]
        || dloss.shape() != [1]
        || lse.dtype() != DType::F32
        || dloss.dtype() != DType::F32
    {
        return Err(Error::shape(
            "cross_entropy_backward",
            "f32 lse [rows], f32 dloss [1]",
            format!("{lse:?}, {dloss:?}"),
        ));
    }
    let dl = Tensor::uninit(gpu, logits.shape(), DType::F32)?;
    gpu.dispatch_1d(Kernel::CrossEntropyBackward, &[logits, labels, lse, dloss], &[&dl], &p, logits.len())?;
    Ok(dl)
}

/// Mean cross-entropy on the tape, a scalar `[1]`: `(1/N)·Σ_n −log softmax(logits[n])[t_n]`
/// (log-sum-exp stable). `labels` is a u32 tensor `[N]` of values `< classes`.
///
/// Backward: `∂logits = (softmax(logits) − onehot(t))·∂loss/N`; saves `logits`, `labels`
/// and the row log-sum-exp.
pub fn cross_entropy_var(tape: &mut Tape, logits: &Var, labels: &Tensor) -> Result<Var> {
    let (loss, lse) = cross_entropy(tape.gpu(), logits.value(), labels)?;
    let (saved_logits, saved_labels) = (logits.value().clone(), labels.clone());
    Ok(tape.push(loss, &[logits], move |gpu, dloss| {
        Ok(vec![Some(cross_entropy_backward(gpu, &saved_logits, &saved_labels, &lse, dloss)?)])
    }))
}
