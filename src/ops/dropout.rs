//! Inverted dropout (`shaders/dropout.wgsl`) with a mask drawn from a counter-based hash of
//! the element index and a seed, so the backward regenerates it instead of storing it.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/dropout.wgsl` (`DropoutParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DropoutParams {
    /// Elements.
    pub n: u32,
    /// An element is kept when its hash is at least this (`p · 2³²`).
    pub threshold: u32,
    /// Low half of the seed.
    pub seed_lo: u32,
    /// High half of the seed.
    pub seed_hi: u32,
    /// `1 / (1 − p)`.
    pub scale: f32,
    /// Index of the first element in the mask (wrapping at 2³²).
    pub offset: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// The kernel's parameters for drop probability `p`, `seed` and the mask from `offset`.
pub fn params(n: usize, p: f64, seed: u64, offset: usize) -> DropoutParams {
    DropoutParams {
        n: n as u32,
        threshold: (p * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        scale: (1.0 / (1.0 - p)) as f32,
        offset: offset as u32,
        _pad: [0; 2],
    }
}

/// `y = x ⊙ m / (1 − p)` with `m[i] ∈ {0, 1}` drawn from `(seed, offset + i)` (so `x`, a
/// slice from element `offset` of a larger tensor, gets that tensor's mask over the slice);
/// `p` in `[0, 1]`, where `p = 1` drops everything (zeros, as `torch.nn.Dropout(1.0)` gives).
pub fn dropout(gpu: &Gpu, x: &Tensor, p: f64, seed: u64, offset: usize) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout probability", format!("must be in [0, 1], got {p}")));
    }
    if x.dtype() != DType::F32 {
        return Err(Error::shape("dropout", "an f32 tensor", format!("{x:?}")));
    }
    if p == 1.0 {
        return Tensor::zeros(gpu, x.shape());
    }
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    gpu.dispatch_1d(Kernel::Dropout, &[x], &[&y], &params(x.len(), p, seed, offset), x.len())?;
    Ok(y)
}

/// Tape op of [`dropout`]; backward: the same mask and scale applied to `∂y`. With `p = 0`
/// the input passes through unrecorded.
pub fn dropout_var(tape: &mut Tape, x: &Var, p: f64, seed: u64, offset: usize) -> Result<Var> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let y = dropout(tape.gpu(), x.value(), p, seed, offset)?;
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(dropout(gpu, g, p, seed, offset)?)])))
}
