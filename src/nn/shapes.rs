//! The shapes a ViT's weights must have, from its config alone: every weight and bias by
//! on-disk name, and merged prompt tokens.

use super::VitConfig;
use super::names::{LayerPart, ModuleId, Naming};
use super::weights::MAX_PROMPT_TOKENS;

/// Whether merged prompts of `shape` fit a model of width `hidden`: `[n, hidden]` with
/// `1 ≤ n ≤` [`MAX_PROMPT_TOKENS`].
pub(super) fn prompts_fit(shape: &[usize], hidden: usize) -> bool {
    matches!(shape, &[n, d] if (1..=MAX_PROMPT_TOKENS).contains(&n) && d == hidden)
}

/// The shape [`prompts_fit`] asks for, in words.
pub(super) fn prompts_shape(hidden: usize) -> String {
    format!("shape [n, {hidden}] with 1 ≤ n ≤ {MAX_PROMPT_TOKENS}")
}

/// Bytes of an f32 tensor of `shape` (`u64::MAX` past that).
pub(super) fn f32_bytes(shape: &[usize]) -> u64 {
    shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64)).unwrap_or(u64::MAX)
}

/// Whether `len` values fill a tensor of `shape` (whose element count may overflow).
pub(super) fn holds_all(shape: &[usize], len: usize) -> bool {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(len)
}

/// The on-disk names and shapes a model with `config` must have.
pub fn expected_shapes(config: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size;
    let mut v = vec![
        ("vit.embeddings.cls_token".to_string(), vec![1, 1, d]),
        ("vit.embeddings.position_embeddings".to_string(), vec![1, config.tokens(), d]),
    ];
    for m in ModuleId::all(config.num_hidden_layers) {
        let (w, b) = module_shapes(config, m);
        let path = m.path(Naming::OnDisk);
        v.push((format!("{path}.weight"), w));
        if let Some(b) = b {
            v.push((format!("{path}.bias"), b));
        }
    }
    v
}

/// Weight and bias shapes of `module` (bias `None` when the module has none).
pub fn module_shapes(config: &VitConfig, module: ModuleId) -> (Vec<usize>, Option<Vec<usize>>) {
    let (d, m, k) = (config.hidden_size, config.intermediate_size, config.num_labels);
    let [ph, pw] = config.patch_size;
    match module {
        ModuleId::PatchEmbed => (vec![d, config.num_channels, ph, pw], Some(vec![d])),
        ModuleId::FinalNorm => (vec![d], Some(vec![d])),
        ModuleId::Classifier => (vec![k, d], Some(vec![k])),
        ModuleId::Layer(_, part) => match part {
            LayerPart::Query | LayerPart::Key | LayerPart::Value => (vec![d, d], config.qkv_bias.then(|| vec![d])),
            LayerPart::AttnOut => (vec![d, d], Some(vec![d])),
            LayerPart::Fc1 => (vec![m, d], Some(vec![m])),
            LayerPart::Fc2 => (vec![d, m], Some(vec![d])),
            LayerPart::LnBefore | LayerPart::LnAfter => (vec![d], Some(vec![d])),
        },
    }
}
