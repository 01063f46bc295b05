//! erf and exact GELU (`shaders/activation.wgsl`).

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/activation.wgsl` (`ActivationParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActivationParams {
    /// Number of elements.
    pub n: u32,
    /// Length of the last axis (the bias length of `bias_gelu`).
    pub cols: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
}

fn check_f32(op: &'static str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.dtype() != DType::F32 || t.shape() != shape {
        return Err(Error::shape(op, format!("{what}: f32 of shape {shape:?}"), format!("{t:?}")));
    }
    Ok(())
}

fn unary(gpu: &Gpu, kernel: Kernel, op: &'static str, x: &Tensor) -> Result<Tensor> {
    check_f32(op, "x", x, x.shape())?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let n = x.len();
    gpu.dispatch_1d(kernel, &[x], &[&y], &ActivationParams { n: n as u32, ..Default::default() }, n)?;
    Ok(y)
}

/// `y = erf(x)` elementwise, within about one f32 ulp (relative error ≲ 1.2e-7).
pub fn erf(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, Kernel::Erf, "erf", x)
}

/// Exact GELU, PyTorch's default: `y = x·Φ(x) = ½x(1 + erf(x/√2))`, computed with erfc for
/// `x < 0` so it keeps its relative accuracy far into the negative tail.
pub fn gelu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, Kernel::Gelu, "gelu", x)
}

/// `∂x = ∂y·(Φ(x) + x·φ(x))`, the backward pass of [`gelu`].
pub fn gelu_backward(gpu: &Gpu, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    check_f32("gelu_backward", "x", x, x.shape())?;
    check_f32("gelu_backward", "dy", dy, x.shape())?;
    let dx = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let n = x.len();
    let params = ActivationParams { n: n as u32, ..Default::default() };
    gpu.dispatch_1d(Kernel::GeluBackward, &[x, dy], &[&dx], &params, n)?;
    Ok(dx)
}

fn bias_params(op: &'static str, x: &Tensor, b: &Tensor) -> Result<ActivationParams> {
    let cols = x.last_dim();
    check_f32(op, "x", x, x.shape())?;
    check_f32(op, "bias (the last axis of x)", b, &[cols])?;
    if x.shape().is_empty() {
        return Err(Error::shape(op, "x of shape [.., d]", format!("{x:?}")));
    }
    Ok(ActivationParams { n: x.len() as u32, cols: cols as u32, ..Default::default() })
}

/// `y = gelu(x + b)` with `b: [d]` broadcast over the rows of `x: [.., d]`, in one pass.
pub fn bias_gelu(gpu: &Gpu, x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let params = bias_params("bias_gelu", x, b)?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    gpu.dispatch_1d(Kernel::BiasGelu, &[x, b], &[&y], &params, x.len())?;
    Ok(y)
}

/// `∂z = ∂y·gelu'(x + b)`, the gradient of [`bias_gelu`] with respect to `x` (and, summed
/// over rows, to `b`).
pub fn bias_gelu_backward(gpu: &Gpu, x: &Tensor, b: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let params = bias_params("bias_gelu_backward", x, b)?;
    check_f32("bias_gelu_backward", "dy", dy, x.shape())?;
    let dz = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    gpu.dispatch_1d(Kernel::BiasGeluBackward, &[x, b, dy], &[&dz], &params, x.len())?;
    Ok(dz)
}

/// Exact GELU on the tape: `y = x·Φ(x)`. Backward: `∂x = ∂y·(Φ(x) + x·φ(x))`; saves `x`.
pub fn gelu_var(tape: &mut Tape, x: &Var) -> Result<Var> {
    let y = gelu(tape.gpu(), x.value())?;
    let saved = x.value().clone();
    Ok(tape.push(y, &[x], move |gpu, dy| Ok(vec![Some(gelu_backward(gpu, &saved, dy)?)])))
}

/// `y = gelu(x + b)` on the tape, `b` broadcast over rows. Backward: `∂z = ∂y·gelu'(x + b)`,
/// `∂x = ∂z`, `∂b = Σ_rows ∂z`, each only when wanted; saves `x` and `b`.
pub fn bias_gelu_var(tape: &mut Tape, x: &Var, b: &Var) -> Result<Var> {
    let y = bias_gelu(tape.gpu(), x.value(), b.value())?;
    let need = [x.requires_grad(), b.requires_grad()];
    let (xs, bs) = (x.value().clone(), b.value().clone());
    Ok(tape.push(y, &[x, b], move |gpu, dy| {
        let dz = bias_gelu_backward(gpu, &xs, &bs, dy)?;
        let db = if need[1] { Some(sum::sum_rows(gpu, &dz, dz.last_dim())?) } else { None };
        Ok(vec![need[0].then_some(dz), db])
    }))
}
