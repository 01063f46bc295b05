//! Multi-head self-attention from the tape ops: the backward comes from theirs.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::ops::matmul::{MatmulSpec, matmul_var};
use crate::ops::shape::{permute_var, reshape_var};
use crate::ops::softmax::softmax_var;

/// `softmax(q kᵀ / √d_h) v` per head, for `q`, `k`, `v` of shape `[B, T, D]` with `heads`
/// heads of `D / heads` channels; the result is `[B, T, D]` with heads concatenated, as in
/// transformers' ViT.
pub fn multi_head_attention(tape: &mut Tape, q: &Var, k: &Var, v: &Var, heads: usize) -> Result<Var> {
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
