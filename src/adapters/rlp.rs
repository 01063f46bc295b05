//! RLP (SPEC §6): `n` prompt tokens `P = P₀ + scale·A·B` inserted right after CLS, after the
//! position embeddings. `P₀` is frozen and stored in the file; merging writes `P` once.
//!
//! An adapter file may also hold the merged form, `prompt_embeddings` `[n, D]` alone (SPEC
//! §9): it is read as `P₀` of a new re-parameterisation with `B = 0`, so the prompts are
//! exactly `P`, and `A` drawn as at initialisation from the seed the adapter is read with
//! (`train --init` passes `--seed`; training needs a nonzero `A`, or `B` would get no
//! gradient). Saving writes the three tensors.

use std::path::Path;

use super::Build;
use super::config::RlpConfig;
use super::params::Slot;
use super::source::Init;
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::io::safetensors::HostTensor;
use crate::nn::vit::insert_after_cls;
use crate::nn::weights::{MAX_PROMPT_TOKENS, PROMPT_KEY};
use crate::ops::matmul::{MatmulSpec, matmul_var};

/// File keys.
pub const PROMPT_INIT: &str = "rlp.prompt_init";
/// File key of `A` `[n, r]`.
pub const A_KEY: &str = "rlp.A";
/// File key of `B` `[r, D]`.
pub const B_KEY: &str = "rlp.B";
/// Mixed into the reading seed to draw `A` when the file holds the merged prompts.
const MERGED_A_STREAM: u64 = 0x524c_5041;

/// The RLP adapter's tensors: `p0` is a frozen slot, `a` and `b` trainable ones.
#[derive(Clone, Debug)]
pub(crate) struct RlpParts {
    pub(crate) p0: Slot,
    pub(crate) a: Slot,
    pub(crate) b: Slot,
    pub(crate) scale: f32,
    pub(crate) tokens: usize,
}

pub(crate) fn build(cfg: &RlpConfig, build: &mut Build<'_>) -> Result<RlpParts> {
    let (n, r, d) = (cfg.num_prompt_tokens, cfg.r, build.model.hidden_size);
    let a_init = Init::Normal { mean: 0.0, std: (1.0 / r as f64).sqrt() };
    let unmerged = [PROMPT_INIT, A_KEY, B_KEY].into_iter().find(|k| build.source_has(k));
    if build.source_has(PROMPT_KEY) {
        if let Some(key) = unmerged {
            return Err(Error::Format {
                path: build.weights_path(),
                message: format!(
                    "holds both the merged `{PROMPT_KEY}` and `{key}`; an RLP adapter file holds \
                     `{PROMPT_INIT}`, `{A_KEY}` and `{B_KEY}`, or `{PROMPT_KEY}` alone"
                ),
            });
        }
        let p0 = build.frozen_from(PROMPT_INIT, PROMPT_KEY, &[n, d])?;
        let a = build.trainable_generated(A_KEY, &[n, r], a_init, MERGED_A_STREAM)?;
        let b = build.trainable_generated(B_KEY, &[r, d], Init::Zeros, MERGED_A_STREAM)?;
        return Ok(RlpParts { p0, a, b, scale: cfg.scale as f32, tokens: n });
    }
    let p0 = build.frozen(PROMPT_INIT, &[n, d], Init::Normal { mean: 0.0, std: 0.02 })?;
    let a = build.trainable(A_KEY, &[n, r], a_init)?;
    let b = build.trainable(B_KEY, &[r, d], Init::Zeros)?;
    Ok(RlpParts { p0, a, b, scale: cfg.scale as f32, tokens: n })
}

/// Fails, naming `num_prompt_tokens` of `config_path`, when the adapter's `tokens` and the
/// model's `merged` prompt tokens pass [`MAX_PROMPT_TOKENS`] together: merging them would make
/// a model no reader takes.
pub(crate) fn check_total(config_path: &Path, tokens: usize, merged: usize) -> Result<()> {
    if tokens + merged <= MAX_PROMPT_TOKENS {
        return Ok(());
    }
    Err(Error::Config {
        path: config_path.to_path_buf(),
        key: "num_prompt_tokens".into(),
        message: format!(
            "is {tokens}, and the model already holds {merged} merged prompt tokens: more than {MAX_PROMPT_TOKENS} in all"
        ),
    })
}

impl RlpParts {
    /// `P = P₀ + scale·A·B` on the tape.
    pub(crate) fn prompts(&self, tape: &mut Tape, p0: &Var, a: &Var, b: &Var) -> Result<Var> {
        matmul_var(tape, a, b, MatmulSpec::new().scaled(self.scale), None, Some(p0))
    }

    /// Tokens with the prompts inserted after CLS.
    pub(crate) fn insert(&self, tape: &mut Tape, x: &Var, p0: &Var, a: &Var, b: &Var) -> Result<Var> {
        let p = self.prompts(tape, p0, a, b)?;
        insert_after_cls(tape, x, &p)
    }

    /// `P` on the host, in f64 then rounded.
    pub(crate) fn merge(&self, p0: &HostTensor, a: &HostTensor, b: &HostTensor) -> HostTensor {
        let (n, r) = (a.shape[0], a.shape[1]);
        let d = b.shape[1];
        let mut out = p0.clone();
        for i in 0..n {
            for j in 0..d {
                let ab: f64 = (0..r).map(|k| f64::from(a.data[i * r + k]) * f64::from(b.data[k * d + j])).sum();
                out.data[i * d + j] = (f64::from(p0.data[i * d + j]) + f64::from(self.scale) * ab) as f32;
            }
        }
        out
    }
}
