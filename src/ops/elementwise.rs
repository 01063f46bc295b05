//! Elementwise arithmetic (`shaders/elementwise.wgsl`).

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/elementwise.wgsl` (`EwParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EwParams {
    /// Number of elements.
    pub n: u32,
    /// First coefficient (the fill value for `fill`).
    pub alpha: f32,
    /// Second coefficient.
    pub beta: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(Error::shape(
            op,
            format!("two f32 tensors of shape {:?}", a.shape()),
            format!("{:?} and {:?}", a, b),
        ));
    }
    Ok(())
}

fn binary(
    gpu: &Gpu,
    kernel: Kernel,
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let y = Tensor::uninit(gpu, a.shape(), DType::F32)?;
    let n = a.len();
    gpu.dispatch_1d(kernel, &[a, b], &[&y], &EwParams { n: n as u32, alpha, beta, _pad: 0 }, n)?;
    Ok(y)
}

/// `a + b`, same shapes.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, Kernel::Add, "add", a, b, 1.0, 1.0)
}

/// `a ⊙ b`, same shapes.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, Kernel::Mul, "mul", a, b, 1.0, 1.0)
}

/// `alpha·a + beta·b`, same shapes.
pub fn axpby(gpu: &Gpu, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
    binary(gpu, Kernel::Axpby, "axpby", a, b, alpha, beta)
}

/// `alpha·a`.
pub fn scale(gpu: &Gpu, a: &Tensor, alpha: f32) -> Result<Tensor> {
    if a.dtype() != DType::F32 {
        return Err(Error::shape("scale", "an f32 tensor", format!("{a:?}")));
    }
    let y = Tensor::uninit(gpu, a.shape(), DType::F32)?;
    let n = a.len();
    gpu.dispatch_1d(Kernel::Scale, &[a], &[&y], &EwParams { n: n as u32, alpha, ..Default::default() }, n)?;
    Ok(y)
}

/// `z = a + b`; backward `∂a = ∂z`, `∂b = ∂z`.
pub fn add_var(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    let y = add(tape.gpu(), a.value(), b.value())?;
    let need = [a.requires_grad(), b.requires_grad()];
    Ok(tape.push(y, &[a, b], move |_, g| Ok(vec![need[0].then(|| g.clone()), need[1].then(|| g.clone())])))
}

/// `z = a ⊙ b`; backward `∂a = ∂z ⊙ b`, `∂b = ∂z ⊙ a` (each side saves only the other).
pub fn mul_var(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    let y = mul(tape.gpu(), a.value(), b.value())?;
    let save_b = a.requires_grad().then(|| b.value().clone());
    let save_a = b.requires_grad().then(|| a.value().clone());
    Ok(tape.push(y, &[a, b], move |gpu, g| {
        let ga = save_b.map(|b| mul(gpu, g, &b)).transpose()?;
        let gb = save_a.map(|a| mul(gpu, g, &a)).transpose()?;
        Ok(vec![ga, gb])
    }))
}

/// `z = alpha·a`; backward `∂a = alpha·∂z`.
pub fn scale_var(tape: &mut Tape, a: &Var, alpha: f32) -> Result<Var> {
    let y = scale(tape.gpu(), a.value(), alpha)?;
    Ok(tape.push(y, &[a], move |gpu, g| Ok(vec![Some(scale(gpu, g, alpha)?)])))
}
