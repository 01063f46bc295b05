//! Multi-head self-attention: fused kernels on CPU adapters, the tape ops (permute, matmul,
//! softmax) elsewhere.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::ops::attention::{attention_var, fused_by_default};
use crate::ops::matmul::{MatmulSpec, matmul_var};
use crate::ops::shape::{concat_var, permute_var, reshape_var, slice_var};
use crate::ops::softmax::softmax_var;

/// The bytes of one head's `T×T` attention scores over `tokens` tokens, or an error naming
/// them when they pass `max`, the most one tensor may hold (under `limit`): the unfused path
/// computes the scores in pieces of whole heads, so one head must fit.
pub(crate) fn one_head_scores(tokens: usize, (max, limit): (u64, &'static str)) -> Result<u64> {
    let bytes = (tokens as u64).saturating_mul(tokens as u64).saturating_mul(4);
    if bytes > max {
        let what = format!("attention over {tokens} tokens (the scores of one head, {tokens}×{tokens})");
        return Err(Error::TooLarge { what, bytes, limit, max });
    }
    Ok(bytes)
}

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
    /// Permutes, batched matmuls and a softmax on the tape (any shape, suits GPUs). The `T×T`
    /// scores of a batch too large for one tensor on the device are computed in pieces of
    /// whole image-heads, each as large as one tensor may be.
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
    if k.shape() != q.shape() || v.shape() != q.shape() || heads == 0 || !d.is_multiple_of(heads) || b * t == 0 {
        return Err(Error::shape(
            "attention",
            format!("q, k, v of one shape [B, T, D] with B, T ≥ 1 and D divisible by {heads} heads"),
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
    // Image-heads, each one `T×T` score matrix, per piece: as many as one tensor may hold.
    let (max, limit) = tape.gpu().max_tensor_bytes();
    let per_head = one_head_scores(t, (max, limit))?;
    let units = b * heads;
    let piece = usize::try_from(max / per_head).unwrap_or(usize::MAX).min(units);
    let split = |tape: &mut Tape, x: &Var| -> Result<Var> {
        let x = reshape_var(tape, x, &[b, t, heads, dh])?;
        let x = permute_var(tape, &x, &[0, 2, 1, 3])?;
        reshape_var(tape, &x, &[units, t, dh])
    };
    let (qh, kh, vh) = (split(tape, q)?, split(tape, k)?, split(tape, v)?);
    let mut pieces = Vec::with_capacity(units.div_ceil(piece));
    for start in (0..units).step_by(piece) {
        let len = piece.min(units - start);
        let part =
            |tape: &mut Tape, x: &Var| if len == units { Ok(x.clone()) } else { slice_var(tape, x, 0, start, len) };
        let (qp, kp, vp) = (part(tape, &qh)?, part(tape, &kh)?, part(tape, &vh)?);
        let scores = matmul_var(tape, &qp, &kp, MatmulSpec::new().transpose_b(), None, None)?;
        let probs = softmax_var(tape, &scores, 1.0 / (dh as f32).sqrt())?;
        pieces.push(matmul_var(tape, &probs, &vp, MatmulSpec::new(), None, None)?);
    }
    let ctx = match pieces.as_slice() {
        [whole] => whole.clone(),
        _ => concat_var(tape, &pieces.iter().collect::<Vec<_>>(), 0)?,
    };
    let ctx = reshape_var(tape, &ctx, &[b, heads, t, dh])?;
    let ctx = permute_var(tape, &ctx, &[0, 2, 1, 3])?;
    reshape_var(tape, &ctx, &[b, t, d])
}
