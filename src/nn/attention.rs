//! Multi-head self-attention: fused kernels on CPU adapters, the tape ops (permute, matmul,
//! softmax) elsewhere.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::ops::attention::{attention_var, fused_by_default};
use crate::ops::matmul::{MatmulSpec, matmul_var};
use crate::ops::shape::{permute_var, reshape_var};
use crate::ops::softmax::softmax_var;

/// Which implementation computes attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// `Fused` on CPU adapters (lavapipe) with subgroups of at least 4 lanes when the heads fit,
    /// `Unfused` otherwise.
    #[default]
    Auto,
    /// [`crate::ops::attention`]: one kernel forward, two backward, no `T×T` tensor stored;
    /// laid out for CPU drivers. Needs `D` and `d_h` multiples of 4, `d_h ≤ 64` and a device
    /// with subgroups of at least 4 lanes.
    Fused,
    /// Permutes, batched matmuls and a softmax on the tape (any shape, suits GPUs).
    Unfused,
}

/// `softmax(q kᵀ / √d_h) v` per head, for `q`, `k`, `v` of shape `[B, T, D]` with `heads`
/// heads of `D / heads` channels; the result is `[B, T, D]` with heads concatenated, as in
/// transformers' ViT.
pub fn multi_head_attention(tape: &mut Tape, q: &Var, k: &Var, v: &Var, heads: usize) -> Result<Var> {
    multi_head_attention_with(tape, q, k, v, heads, AttentionPath::Auto)
}

/// [`multi_head_attention`] on the chosen implementation.
pub fn multi_head_attention_with(
    tape: &mut Tape,
    q: &Var,
    k: &Var,
    v: &Var,
    heads: usize,
    path: AttentionPath,
) -> Result<Var> {
    let &[b, t, d] = q.shape() else {
        return Err(Error::shape("attention", "q of shape [B, T, D]", format!("{:?}", q.shape())));
    };
    if k.shape() != q.shape() || v.shape() != q.shape() || heads == 0 || !d.is_multiple_of(heads) {
        return Err(Error::shape(
            "attention",
            format!("q, k, v of one shape [B, T, D] with D divisible by {heads} heads"),
            format!("{:?}, {:?}, {:?}", q.shape(), k.shape(), v.shape()),
        ));
    }
    let fused = match path {
        AttentionPath::Auto => fused_by_default(tape.gpu(), d, heads),
        AttentionPath::Fused => true,
        AttentionPath::Unfused => false,
    };
    if fused {
        return attention_var(tape, q, k, v, heads);
    }
    let dh = d / heads;
    let split = |tape: &mut Tape, x: &Var| -> Result<Var> {
        let x = reshape_var(tape, x, &[b, t, heads, dh])?;
        permute_var(tape, &x, &[0, 2, 1, 3])
    };
    let (qh, kh, vh) = (split(tape, q)?, split(tape, k)?, split(tape, v)?);
    let scores = matmul_var(tape, &qh, &kh, MatmulSpec::new().transpose_b(), None, None)?;
    let probs = softmax_var(tape, &scores, 1.0 / (dh as f32).sqrt())?;
    let ctx = matmul_var(tape, &probs, &vh, MatmulSpec::new(), None, None)?;
    let ctx = permute_var(tape, &ctx, &[0, 2, 1, 3])?;
    reshape_var(tape, &ctx, &[b, t, d])
}
