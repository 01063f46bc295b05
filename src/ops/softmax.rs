//! Softmax over the last axis with a scale applied first (`shaders/softmax.wgsl`).

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/softmax.wgsl` (`SoftmaxParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SoftmaxParams {
    /// Rows (all axes but the last).
    pub rows: u32,
    /// Length of the last axis.
    pub d: u32,
    /// Scale applied to `x` before the softmax.
    pub alpha: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

fn params(op: &'static str, x: &Tensor, alpha: f32) -> Result<SoftmaxParams> {
    if x.dtype() != DType::F32 || x.is_empty() || x.shape().is_empty() {
        return Err(Error::shape(op, "a non-empty f32 tensor [.., d]", format!("{x:?}")));
    }
    if !alpha.is_finite() {
        return Err(Error::invalid(format!("{op} scale"), format!("{alpha} is not finite")));
    }
    let d = x.last_dim();
    Ok(SoftmaxParams { rows: (x.len() / d) as u32, d: d as u32, alpha, _pad: 0 })
}

/// `y = softmax(alpha·x)` over the last axis: `y_j = exp(z_j − max z)/Σ_k exp(z_k − max z)`
/// with `z = alpha·x` (max-subtracted, so no overflow for any finite input).
pub fn softmax(gpu: &Gpu, x: &Tensor, alpha: f32) -> Result<Tensor> {
    let p = params("softmax", x, alpha)?;
    gpu.check_loops(|| format!("softmax over rows of {}", p.d), Gpu::row_loops(3, p.d as usize, 2))?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    gpu.dispatch(Kernel::Softmax, &[x], &[&y], &p, gpu.grid_1d(p.rows as usize, 1))?;
    Ok(y)
}

/// `∂x = alpha·y ⊙ (∂y − Σ_last(∂y ⊙ y))` for `y = softmax(alpha·x)`.
pub fn softmax_backward(gpu: &Gpu, y: &Tensor, dy: &Tensor, alpha: f32) -> Result<Tensor> {
    let p = params("softmax_backward", y, alpha)?;
    gpu.check_loops(|| format!("softmax_backward over rows of {}", p.d), Gpu::row_loops(2, p.d as usize, 1))?;
    if dy.shape() != y.shape() || dy.dtype() != DType::F32 {
        return Err(Error::shape("softmax_backward", format!("dy of shape {:?}", y.shape()), format!("{dy:?}")));
    }
    let dx = Tensor::uninit(gpu, y.shape(), DType::F32)?;
    gpu.dispatch(Kernel::SoftmaxBackward, &[y, dy], &[&dx], &p, gpu.grid_1d(p.rows as usize, 1))?;
    Ok(dx)
}

/// `y = softmax(alpha·x)` over the last axis, on the tape.
///
/// Backward: `∂x = alpha·y ⊙ (∂y − Σ_last(∂y ⊙ y))`; the rule saves only `y`.
pub fn softmax_var(tape: &mut Tape, x: &Var, alpha: f32) -> Result<Var> {
    let y = softmax(tape.gpu(), x.value(), alpha)?;
    let saved = y.clone();
    Ok(tape.push(y, &[x], move |gpu, dy| Ok(vec![Some(softmax_backward(gpu, &saved, dy, alpha)?)])))
}
