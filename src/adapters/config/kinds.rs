//! The settings of FLoRA, MoPPA and RLP (SPEC §5, §3, §6), read from `adapter_config.json`;
//! LoRA's, which follow PEFT's many options, are in `lora.rs`.

use serde_json::Value;

use super::{MAX_RANK, targets, usize_list};
use crate::error::Result;
use crate::io::json::JsonFile;
use crate::nn::Targets;

/// Rank of a FLoRA core: one for every mode, or one per mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloraRank {
    /// `r_i = min(r, d_i)`.
    Uniform(usize),
    /// One rank per mode, in the weight's PyTorch mode order.
    PerMode(Vec<usize>),
}

/// FLoRA settings.
#[derive(Clone, Debug)]
pub struct FloraConfig {
    /// Core ranks.
    pub r: FloraRank,
    /// Multiplier of ΔW.
    pub scale: f64,
    /// Modules to adapt (linear and conv).
    pub target_modules: Targets,
}

/// MoPPA settings.
#[derive(Clone, Debug)]
pub struct MoppaConfig {
    /// Router heads; `None` means the model's attention heads.
    pub num_heads: Option<usize>,
    /// Layers with a pre-filter; `None` means all.
    pub layers: Option<Vec<usize>>,
    /// Weight of the route-entropy term at step 0.
    pub entropy_scale: f64,
    /// Fraction of training over which the entropy weight decays to zero.
    pub entropy_decay_fraction: f64,
}

/// RLP settings.
#[derive(Clone, Debug)]
pub struct RlpConfig {
    /// Prompt tokens inserted after CLS.
    pub num_prompt_tokens: usize,
    /// Rank of `A·B`.
    pub r: usize,
    /// Multiplier of `A·B`.
    pub scale: f64,
}

pub(super) fn flora(j: &JsonFile) -> Result<FloraConfig> {
    let r = match j.require("r")? {
        Value::Array(_) => {
            let ranks = usize_list(j, "r")?.unwrap_or_default();
            if ranks.is_empty() || ranks.iter().any(|&r| r == 0 || r > MAX_RANK) {
                return Err(j.error("r", "must list ranks between 1 and 65536"));
            }
            FloraRank::PerMode(ranks)
        }
        _ => FloraRank::Uniform(j.usize_in("r", 1, MAX_RANK)?),
    };
    Ok(FloraConfig { r, scale: j.opt_f64("scale")?.unwrap_or(1.0), target_modules: targets(j, "target_modules")? })
}

pub(super) fn moppa(j: &JsonFile) -> Result<MoppaConfig> {
    let decay = j.opt_f64("entropy_decay_fraction")?.unwrap_or(0.5);
    if decay <= 0.0 {
        return Err(j.error("entropy_decay_fraction", format!("must be positive, got {decay}")));
    }
    let layers = usize_list(j, "layers")?;
    if let Some(layers) = &layers {
        if layers.is_empty() {
            return Err(j.error("layers", "is empty, so no layer would be adapted (leave it out for all layers)"));
        }
        let mut sorted = layers.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(j.error("layers", format!("lists layer {} more than once", w[0])));
        }
    }
    Ok(MoppaConfig {
        num_heads: j.opt_usize_in("num_heads", 1, 1 << 16)?,
        layers,
        entropy_scale: j.opt_f64("entropy_scale")?.unwrap_or(0.0),
        entropy_decay_fraction: decay,
    })
}

pub(super) fn rlp(j: &JsonFile) -> Result<RlpConfig> {
    Ok(RlpConfig {
        num_prompt_tokens: j.usize_in("num_prompt_tokens", 1, crate::nn::weights::MAX_PROMPT_TOKENS)?,
        r: j.usize_in("r", 1, MAX_RANK)?,
        scale: j.opt_f64("scale")?.unwrap_or(1.0),
    })
}
