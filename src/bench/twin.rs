//! f64 twins of the benchmarked training steps, built from [`crate::reference`], that the
//! workloads check themselves against before they are timed.
//!
//! Tensors are looked up by name in one map: base weights by their on-disk names (SPEC §8)
//! and adapter tensors by their file keys (SPEC §9), so a check can perturb any of them.

use std::collections::BTreeMap;

use crate::adapters::PEFT_PREFIX;
use crate::nn::VitConfig;
use crate::reference::{activation, matmul, norm, priors, shape, softmax, spectral};

/// Every tensor of a model and its adapter, by name, in f64.
pub(crate) type Tensors = BTreeMap<String, Vec<f64>>;

fn get<'a>(t: &'a Tensors, key: &str) -> &'a [f64] {
    t.get(key).unwrap_or_else(|| panic!("twin: no tensor `{key}`"))
}

/// `y = x Wᵀ + b` of module `path` for `x` `[rows, inn]` (a saved copy replaces the base
/// weights), plus `scale·(x Aᵀ) Bᵀ` when the module has LoRA tensors.
fn linear(t: &Tensors, path: &str, x: &[f64], inn: usize, lora_scale: f64) -> Vec<f64> {
    let saved = format!("{PEFT_PREFIX}{path}");
    let (w, b) = match t.get(&format!("{saved}.weight")) {
        Some(w) => (w.as_slice(), t.get(&format!("{saved}.bias")).map(Vec::as_slice)),
        None => (get(t, &format!("{path}.weight")), t.get(&format!("{path}.bias")).map(Vec::as_slice)),
    };
    let out = w.len() / inn;
    let mut y = matmul::linear(x, w, out, b);
    if let (Some(a), Some(bm)) = (t.get(&format!("{saved}.lora_A.weight")), t.get(&format!("{saved}.lora_B.weight"))) {
        let r = a.len() / inn;
        let u = matmul::linear(&matmul::linear(x, a, r, None), bm, out, None);
        y.iter_mut().zip(u).for_each(|(y, u)| *y += lora_scale * u);
    }
    y
}

/// The MoPPA filter of layer `layer` on `x` `[batch, tokens, d]`, when the adapter has one.
fn moppa(t: &Tensors, c: &VitConfig, layer: usize, x: &[f64], batch: usize) -> Option<Vec<f64>> {
    let stem = format!("{PEFT_PREFIX}vit.encoder.layer.{layer}.moppa");
    let logits = t.get(&format!("{stem}.router_logits"))?;
    let branch = |b: &str| get(t, &format!("{PEFT_PREFIX}vit.encoder.moppa.k_{b}")).to_vec();
    let times = |b: &str| get(t, &format!("{stem}.t_{b}")).to_vec();
    let tau = get(t, &format!("{stem}.temperature")).to_vec();
    let ((gh, gw), heads) = (c.grid(), tau.len());
    let prior = priors::Prior {
        gh,
        gw,
        heads,
        d: c.hidden_size / heads,
        k: [branch("heat"), branch("wave"), branch("poisson")],
        t: [times("heat"), times("wave"), times("poisson")],
        logits: logits.clone(),
        tau,
    };
    let r = priors::prior_response(&prior);
    let tokens = x.len() / (batch * c.hidden_size);
    Some(spectral::moppa_filter(x, [batch, tokens, c.hidden_size], gh, gw, &r))
}

/// `softmax(q kᵀ/√d_h) v` per head for `q`, `k`, `v` `[batch, tokens, d]`.
fn attention(q: &[f64], k: &[f64], v: &[f64], batch: usize, d: usize, heads: usize) -> Vec<f64> {
    let tokens = q.len() / (batch * d);
    let dh = d / heads;
    let mut ctx = vec![0.0; q.len()];
    let at = |b: usize, i: usize, h: usize, e: usize| (b * tokens + i) * d + h * dh + e;
    for b in 0..batch {
        for h in 0..heads {
            let mut scores = vec![0.0; tokens * tokens];
            for i in 0..tokens {
                for j in 0..tokens {
                    scores[i * tokens + j] = (0..dh).map(|e| q[at(b, i, h, e)] * k[at(b, j, h, e)]).sum();
                }
            }
            let probs = softmax::softmax(&scores, tokens, 1.0 / (dh as f64).sqrt());
            for i in 0..tokens {
                for e in 0..dh {
                    ctx[at(b, i, h, e)] = (0..tokens).map(|j| probs[i * tokens + j] * v[at(b, j, h, e)]).sum();
                }
            }
        }
    }
    ctx
}

fn layer_norm(t: &Tensors, path: &str, x: &[f64], eps: f64) -> Vec<f64> {
    norm::layer_norm(x, get(t, &format!("{path}.weight")), get(t, &format!("{path}.bias")), eps).0
}

/// Layer `layer` of the ViT on tokens `x` `[batch, tokens, d]`, with the adapter tensors in
/// `t` (LoRA with scale `lora_scale`, MoPPA), as `Vit::layer_forward` computes it.
pub(crate) fn layer(t: &Tensors, c: &VitConfig, layer: usize, x: &[f64], batch: usize, lora_scale: f64) -> Vec<f64> {
    let p = format!("vit.encoder.layer.{layer}");
    let eps = c.layer_norm_eps;
    let filtered = moppa(t, c, layer, x, batch);
    let h = layer_norm(t, &format!("{p}.layernorm_before"), filtered.as_deref().unwrap_or(x), eps);
    let (d, mlp) = (c.hidden_size, c.intermediate_size);
    let [q, k, v] =
        ["query", "key", "value"].map(|m| linear(t, &format!("{p}.attention.attention.{m}"), &h, d, lora_scale));
    let ctx = attention(&q, &k, &v, batch, d, c.num_attention_heads);
    let a = linear(t, &format!("{p}.attention.output.dense"), &ctx, d, lora_scale);
    let x1: Vec<f64> = x.iter().zip(&a).map(|(x, a)| x + a).collect();
    let h = layer_norm(t, &format!("{p}.layernorm_after"), &x1, eps);
    let h = activation::gelu(&linear(t, &format!("{p}.intermediate.dense"), &h, d, lora_scale));
    let h = linear(t, &format!("{p}.output.dense"), &h, mlp, lora_scale);
    x1.iter().zip(&h).map(|(x, h)| x + h).collect()
}

/// Logits `[batch, labels]` of the whole ViT for images `[batch, C, H, W]`.
pub(crate) fn vit_logits(t: &Tensors, c: &VitConfig, images: &[f64], batch: usize, lora_scale: f64) -> Vec<f64> {
    let d = c.hidden_size;
    let shape = [batch, c.num_channels, c.image_size[0], c.image_size[1]];
    let pe = "vit.embeddings.patch_embeddings.projection";
    let patches = shape::patch_conv(
        images,
        &shape,
        get(t, &format!("{pe}.weight")),
        d,
        c.patch_size,
        Some(get(t, &format!("{pe}.bias"))),
    );
    let (cls, pos) = (get(t, "vit.embeddings.cls_token"), get(t, "vit.embeddings.position_embeddings"));
    let tokens = c.tokens();
    let mut x = vec![0.0; batch * tokens * d];
    for b in 0..batch {
        for i in 0..tokens {
            for e in 0..d {
                let value = if i == 0 { cls[e] } else { patches[(b * (tokens - 1) + i - 1) * d + e] };
                x[(b * tokens + i) * d + e] = value + pos[i * d + e];
            }
        }
    }
    for l in 0..c.num_hidden_layers {
        x = layer(t, c, l, &x, batch, lora_scale);
    }
    let x = layer_norm(t, "vit.layernorm", &x, c.layer_norm_eps);
    let cls: Vec<f64> = (0..batch).flat_map(|b| x[b * tokens * d..][..d].to_vec()).collect();
    linear(t, "classifier", &cls, d, lora_scale)
}

/// `mean(y²)`.
pub(crate) fn mean_square(y: &[f64]) -> f64 {
    y.iter().map(|v| v * v).sum::<f64>() / y.len() as f64
}
