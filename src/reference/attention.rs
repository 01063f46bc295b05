//! Twins of `shaders/attention.wgsl`: multi-head attention on `[B, T, D]` tokens with head
//! `h` in channels `h·dh .. (h+1)·dh`, from the textbook formulas, in f64.

use super::softmax::softmax;

/// Index of channel `e` of head `h` of token `t` in batch `b`.
fn at(dims: [usize; 3], heads: usize, b: usize, t: usize, h: usize, e: usize) -> usize {
    let [_, tokens, d] = dims;
    (b * tokens + t) * d + h * (d / heads) + e
}

/// Scaled scores `s_ij = q_i·k_j / √dh` of batch `b`, head `h`, `[T, T]`.
fn scores(q: &[f64], k: &[f64], dims: [usize; 3], heads: usize, b: usize, h: usize) -> Vec<f64> {
    let [_, tokens, d] = dims;
    let dh = d / heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let mut s = vec![0.0; tokens * tokens];
    for i in 0..tokens {
        for j in 0..tokens {
            s[i * tokens + j] =
                scale * (0..dh).map(|e| q[at(dims, heads, b, i, h, e)] * k[at(dims, heads, b, j, h, e)]).sum::<f64>();
        }
    }
    s
}

/// `attention_forward`: `(o, lse)` with `o_i = Σ_j softmax_j(s_ij) v_j` `[B, T, D]` and
/// `lse_i = log Σ_j exp(s_ij)` `[B, H, T]`; `dims = [B, T, D]`.
pub fn attention_forward(q: &[f64], k: &[f64], v: &[f64], dims: [usize; 3], heads: usize) -> (Vec<f64>, Vec<f64>) {
    let [batch, tokens, d] = dims;
    let dh = d / heads;
    let mut o = vec![0.0; q.len()];
    let mut lse = vec![0.0; batch * heads * tokens];
    for b in 0..batch {
        for h in 0..heads {
            let s = scores(q, k, dims, heads, b, h);
            let p = softmax(&s, tokens, 1.0);
            for i in 0..tokens {
                let row = &s[i * tokens..][..tokens];
                let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                lse[(b * heads + h) * tokens + i] = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                for e in 0..dh {
                    o[at(dims, heads, b, i, h, e)] =
                        (0..tokens).map(|j| p[i * tokens + j] * v[at(dims, heads, b, j, h, e)]).sum();
                }
            }
        }
    }
    (o, lse)
}

/// `attention_backward_q` and `attention_backward_kv` together: `(∂q, ∂k, ∂v)` given `∂o`,
/// by the chain rule through the softmax: `∂P = ∂o vᵀ`, `∂s = P ⊙ (∂P − Σ_j ∂P ⊙ P)`,
/// `∂q = ∂s k / √dh`, `∂k = ∂sᵀ q / √dh`, `∂v = Pᵀ ∂o`.
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_o: &[f64],
    dims: [usize; 3],
    heads: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [batch, tokens, d] = dims;
    let dh = d / heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
    for b in 0..batch {
        for h in 0..heads {
            let p = softmax(&scores(q, k, dims, heads, b, h), tokens, 1.0);
            let ix = |t: usize, e: usize| at(dims, heads, b, t, h, e);
            let mut dp = vec![0.0; tokens * tokens];
            for i in 0..tokens {
                for j in 0..tokens {
                    dp[i * tokens + j] = (0..dh).map(|e| d_o[ix(i, e)] * v[ix(j, e)]).sum();
                }
            }
            let ds = super::softmax::softmax_backward(&p, &dp, tokens, 1.0);
            for i in 0..tokens {
                for j in 0..tokens {
                    for e in 0..dh {
                        dq[ix(i, e)] += scale * ds[i * tokens + j] * k[ix(j, e)];
                        dk[ix(j, e)] += scale * ds[i * tokens + j] * q[ix(i, e)];
                        dv[ix(j, e)] += p[i * tokens + j] * d_o[ix(i, e)];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}
