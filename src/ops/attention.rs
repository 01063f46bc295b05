//! Fused multi-head attention for CPU adapters (`shaders/attention.wgsl`).
//!
//! On tokens `q`, `k`, `v` `[B, T, D]` with `H` heads of `dh = D/H` channels (head `h` in
//! channels `h·dh .. (h+1)·dh`, as the linear layers produce them), per head:
//!
//! ```text
//! o_i = Σ_j P_ij v_j,   P_ij = softmax_j(scale · q_i·k_j),   lse_i = log Σ_j exp(scale · q_i·k_j)
//! ```
//!
//! with `scale = 1/√dh`. The output `o` has the same layout (heads concatenated), so no
//! permutes are needed, and the `T×T` scores never reach memory: the backward recomputes
//! them from `lse`. Backward, with `D_i = ∂o_i·o_i`: `∂s_ij = P_ij (∂o_i·v_j − D_i)`,
//! `∂q_i = scale Σ_j ∂s_ij k_j`, `∂k_j = scale Σ_i ∂s_ij q_i`, `∂v_j = Σ_i P_ij ∂o_i`.
//!
//! The kernels are laid out for CPU drivers (see the shader's header); on GPUs the unfused
//! path of [`crate::nn::attention`] runs. They need `D % 4 = 0`, `dh % 4 = 0`, `dh ≤ 64`.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/attention.wgsl` (`AttentionParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    /// Batch size `B`.
    pub batch: u32,
    /// Tokens `T`.
    pub tokens: u32,
    /// Heads `H`.
    pub heads: u32,
    /// `D / 4`.
    pub d4: u32,
    /// `dh / 4`.
    pub dh4: u32,
    /// `1/√dh`.
    pub scale: f32,
}

/// Largest head width the fused kernels hold in registers.
pub const MAX_HEAD_DIM: usize = 64;

/// Lanes of the fused kernels that share each row they load by subgroup operations: the
/// device's subgroups must have at least this many.
const SHARE: u32 = 4;

/// Whether the fused kernels compute attention of `heads` heads over width `d` (shapes only;
/// the device must also have subgroups of at least 4 lanes, see [`fused_kernels_run_on`]).
pub fn attention_fits(d: usize, heads: usize) -> bool {
    heads > 0 && d.is_multiple_of(heads) && {
        let dh = d / heads;
        d.is_multiple_of(4) && dh.is_multiple_of(4) && dh <= MAX_HEAD_DIM && dh > 0
    }
}

/// Whether `gpu` runs the fused kernels: they share rows across subgroups of 4 lanes.
pub fn fused_kernels_run_on(gpu: &Gpu) -> bool {
    gpu.has_subgroups_of(SHARE)
}

/// Whether attention of `heads` heads over width `d` takes the fused kernels by default on
/// `gpu` (`AttentionPath::Auto`): CPU kernels ([`Gpu::cpu_kernels`]) that the device runs, and
/// heads that fit.
pub fn fused_by_default(gpu: &Gpu, d: usize, heads: usize) -> bool {
    gpu.cpu_kernels() && fused_kernels_run_on(gpu) && attention_fits(d, heads)
}

fn params(gpu: &Gpu, op: &'static str, q: &Tensor, heads: usize) -> Result<AttentionParams> {
    let &[batch, tokens, d] = q.shape() else {
        return Err(Error::shape(op, "q of shape [B, T, D]", format!("{:?}", q.shape())));
    };
    if q.dtype() != DType::F32 || batch == 0 || tokens == 0 || !attention_fits(d, heads) {
        return Err(Error::shape(
            op,
            format!("f32 [B, T, D] with {heads} heads of a width that is a multiple of 4, at most {MAX_HEAD_DIM}"),
            format!("{q:?}"),
        ));
    }
    if !fused_kernels_run_on(gpu) {
        return Err(Error::invalid(
            op,
            format!("the fused attention kernels need subgroups of at least {SHARE} lanes, which this device lacks"),
        ));
    }
    if q.len() > u32::MAX as usize {
        return Err(Error::invalid(op, format!("{q:?} has more than 2^32 elements")));
    }
    // An invocation loops over every token (its query's keys, or its key's queries).
    gpu.check_loops(|| format!("attention over {tokens} tokens"), tokens)?;
    let dh = d / heads;
    Ok(AttentionParams {
        batch: batch as u32,
        tokens: tokens as u32,
        heads: heads as u32,
        d4: (d / 4) as u32,
        dh4: (dh / 4) as u32,
        scale: 1.0 / (dh as f32).sqrt(),
    })
}

fn same_shape(op: &'static str, q: &Tensor, others: &[&Tensor]) -> Result<()> {
    match others.iter().find(|t| t.shape() != q.shape() || t.dtype() != DType::F32) {
        Some(bad) => Err(Error::shape(op, format!("f32 tensors shaped like q {q:?}"), format!("{bad:?}"))),
        None => Ok(()),
    }
}

fn grid(p: &AttentionParams, per_workgroup: u32) -> [u32; 3] {
    [p.tokens.div_ceil(per_workgroup), p.heads, p.batch]
}

/// `(o, lse)`: attention of `q`, `k`, `v` `[B, T, D]` with `heads` heads; `o` is `[B, T, D]`,
/// `lse` the log-sum-exp of each query's scores `[B, H, T]`.
pub fn attention(gpu: &Gpu, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let p = params(gpu, "attention", q, heads)?;
    same_shape("attention", q, &[k, v])?;
    let o = Tensor::uninit(gpu, q.shape(), DType::F32)?;
    let lse = Tensor::uninit(gpu, &[p.batch as usize, heads, p.tokens as usize], DType::F32)?;
    gpu.dispatch(Kernel::AttentionForward, &[q, k, v], &[&o, &lse], &p, grid(&p, 32))?;
    Ok((o, lse))
}

/// `(∂q, ∂k, ∂v)` of [`attention`] given `∂o`, from the forward's `o` and `lse`.
#[expect(clippy::too_many_arguments, reason = "the forward's inputs and outputs and the incoming gradient")]
pub fn attention_backward(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    lse: &Tensor,
    d_o: &Tensor,
    heads: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = params(gpu, "attention_backward", q, heads)?;
    same_shape("attention_backward", q, &[k, v, o, d_o])?;
    let rows = [p.batch as usize, heads, p.tokens as usize];
    if lse.shape() != rows || lse.dtype() != DType::F32 {
        return Err(Error::shape("attention_backward", format!("f32 lse {rows:?}"), format!("{lse:?}")));
    }
    let dq = Tensor::uninit(gpu, q.shape(), DType::F32)?;
    let dsum = Tensor::uninit(gpu, &rows, DType::F32)?;
    gpu.dispatch(Kernel::AttentionBackwardQ, &[q, k, v, o, d_o, lse], &[&dq, &dsum], &p, grid(&p, 32))?;
    let dk = Tensor::uninit(gpu, q.shape(), DType::F32)?;
    let dv = Tensor::uninit(gpu, q.shape(), DType::F32)?;
    gpu.dispatch(Kernel::AttentionBackwardKv, &[q, k, v, d_o, lse, &dsum], &[&dk, &dv], &p, grid(&p, 32))?;
    Ok((dq, dk, dv))
}

/// [`attention`] on the tape, returning `o`. Backward: [`attention_backward`], saving `q`,
/// `k`, `v`, `o` and `lse` (not the `T×T` probabilities); gradients only for the inputs
/// that need them.
pub fn attention_var(tape: &mut Tape, q: &Var, k: &Var, v: &Var, heads: usize) -> Result<Var> {
    let (o, lse) = attention(tape.gpu(), q.value(), k.value(), v.value(), heads)?;
    let needs = [q.requires_grad(), k.requires_grad(), v.requires_grad()];
    let saved =
        needs.contains(&true).then(|| (q.value().clone(), k.value().clone(), v.value().clone(), o.clone(), lse));
    Ok(tape.push(o, &[q, k, v], move |gpu, g| {
        let Some((q, k, v, o, lse)) = saved else { return Ok(vec![None, None, None]) };
        let (dq, dk, dv) = attention_backward(gpu, &q, &k, &v, &o, &lse, g, heads)?;
        Ok([dq, dk, dv].into_iter().zip(needs).map(|(t, need)| need.then_some(t)).collect())
    }))
}
