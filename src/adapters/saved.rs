//! Saved modules (SPEC §7): PEFT's `modules_to_save`, trained in full and stored in the
//! adapter file; a classifier with another label count replaces the base head.

use super::Build;
use super::config::{EMBEDDINGS, LoraBias};
use super::params::{PEFT_PREFIX, Slot, Value};
use super::source::Init;
use crate::error::{Error, Result};
use crate::io::safetensors::HostTensor;
use crate::nn::weights::module_shapes;
use crate::nn::{ModuleId, Naming};

/// A module whose weights the adapter replaces.
#[derive(Clone, Debug)]
pub(crate) struct SavedModule {
    pub(crate) module: ModuleId,
    pub(crate) weight: Slot,
    pub(crate) bias: Option<Slot>,
    /// Slots in the frozen list, not trained: the input embedding PEFT stores with
    /// `save_embedding_layers` (see [`embedding_from_file`]).
    pub(crate) frozen: bool,
}

/// Builds the saved modules: from the file, or as copies of the base (a new head of
/// `num_labels` labels starts at zero). Returns them and the adapted model's label count.
pub(crate) fn build(
    modules: &[ModuleId],
    saves_under: impl Fn(ModuleId, Naming) -> bool,
    num_labels: Option<usize>,
    build: &mut Build<'_>,
) -> Result<(Vec<SavedModule>, usize)> {
    let model = build.model;
    let mut labels = model.num_labels;
    let mut saved = Vec::new();
    for &module in modules {
        let naming = build.key_naming(module, |n| saves_under(module, n), "weight");
        let stem = format!("{PEFT_PREFIX}{}", module.path(naming));
        let base_path = module.path(Naming::OnDisk);
        let (w_shape, b_shape) = module_shapes(model, module);
        let (wk, bk) = (format!("{stem}.weight"), format!("{stem}.bias"));
        let (base_w, base_b) = (format!("{base_path}.weight"), format!("{base_path}.bias"));
        let (weight, bias) = if module == ModuleId::Classifier {
            let (w, b, k) = classifier(build, &wk, &bk, &w_shape, num_labels)?;
            labels = k;
            let weight = build.params_mut().train(wk, w.map_or(Value::Base(base_w), Value::Host));
            let bias = build.params_mut().train(bk, b.map_or(Value::Base(base_b), Value::Host));
            (weight, Some(bias))
        } else if build.is_file() {
            let weight = build.trainable(&wk, &w_shape, Init::Zeros)?;
            let bias = b_shape.map(|s| build.trainable(&bk, &s, Init::Zeros)).transpose()?;
            (weight, bias)
        } else {
            let weight = build.params_mut().train(wk, Value::Base(base_w));
            let bias = b_shape.map(|_| build.params_mut().train(bk, Value::Base(base_b)));
            (weight, bias)
        };
        saved.push(SavedModule { module, weight, bias, frozen: false });
    }
    Ok((saved, labels))
}

/// A bias of the base model that a LoRA adapter trains and saves (PEFT's `bias: "all"` or
/// `"lora_only"`), replacing the base module's in the forward pass and in a merge.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrainedBias {
    pub(crate) module: ModuleId,
    pub(crate) slot: Slot,
}

/// Builds the biases `which` trains, after the LoRA modules (`adapted`) and the saved
/// modules (`saved`, whose biases train with them; the patch embedding PEFT stores with
/// `save_embedding_layers` keeps its bias here, see [`embedding_from_file`]). As PEFT keys
/// them, a LoRA-adapted module's bias is `<stem>.base_layer.bias` and any other's
/// `base_model.model.<path>.bias`; a fresh one starts as the base model's, and so does one a
/// file lacks (PEFT before 0.18 saved no `base_layer.bias` for `"lora_only"`, and loads the
/// file with the base's). PEFT also stores the biases inside a saved module twice more, under
/// `.modules_to_save.` and `.original_module.` (`<m>.modules_to_save.bias`, or
/// `mlp.original_module.fc1.bias` for a saved container); it loads neither, and neither is
/// read here.
pub(crate) fn biases(
    which: LoraBias,
    adapted: &[super::lora::LoraModule],
    saved: &[SavedModule],
    build: &mut Build<'_>,
) -> Result<Vec<TrainedBias>> {
    let mut out = Vec::new();
    if which == LoraBias::None {
        return Ok(out);
    }
    build.ignore_where(|key| {
        key.ends_with(".bias") && (key.contains(".modules_to_save.") || key.contains(".original_module."))
    });
    for module in ModuleId::all(build.model.num_hidden_layers) {
        let (_, Some(shape)) = module_shapes(build.model, module) else { continue };
        if saved.iter().any(|s| s.module == module && s.bias.is_some()) {
            continue;
        }
        let key = match adapted.iter().find(|m| m.module == module) {
            Some(m) => format!("{}.base_layer.bias", m.stem),
            None if which == LoraBias::LoraOnly => continue,
            None => {
                let preferred = build.preferred;
                let naming = build.key_naming(module, |n| n == preferred, "bias");
                format!("{PEFT_PREFIX}{}.bias", module.path(naming))
            }
        };
        let slot = if build.source_has(&key) {
            build.trainable(&key, &shape, Init::Zeros)?
        } else {
            build.params_mut().train(key, Value::Base(format!("{}.bias", module.path(Naming::OnDisk))))
        };
        out.push(TrainedBias { module, slot });
    }
    Ok(out)
}

/// The patch embedding as PEFT's `save_embedding_layers` stores it beside a LoRA adapter
/// (`base_model.model.vit.embeddings.patch_embeddings.projection.weight` and `.bias`, the
/// model's input embedding, without it being in `modules_to_save`): PEFT loads those into
/// the base model, so they replace its patch embedding here too, frozen as PEFT keeps them,
/// but for the bias when `bias_trains` (PEFT's `bias: "all"`): [`biases`] reads that one,
/// trainable. `None` when the file has no such tensors or the module is already saved.
pub(crate) fn embedding_from_file(
    saved: &[SavedModule],
    bias_trains: bool,
    build: &mut Build<'_>,
) -> Result<Option<SavedModule>> {
    let module = ModuleId::PatchEmbed;
    let stem = format!("{PEFT_PREFIX}{}", module.path(Naming::OnDisk));
    let (wk, bk) = (format!("{stem}.weight"), format!("{stem}.bias"));
    if !build.is_file() || saved.iter().any(|s| s.module == module) || !build.source_has(&wk) {
        return Ok(None);
    }
    let (w_shape, b_shape) = module_shapes(build.model, module);
    let weight = build.frozen(&wk, &w_shape, Init::Zeros)?;
    let bias = match b_shape {
        Some(s) if build.source_has(&bk) && !bias_trains => Some(build.frozen(&bk, &s, Init::Zeros)?),
        _ => None,
    };
    Ok(Some(SavedModule { module, weight, bias, frozen: true }))
}

/// `vit.embeddings`' own tensors, `cls_token` `[1, 1, D]` and `position_embeddings`
/// `[1, T, D]`, trained in full when `modules_to_save` names the embeddings (or `vit`), as
/// PEFT saves everything a saved module holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SavedEmbeddings {
    pub(crate) cls_token: Slot,
    pub(crate) position_embeddings: Slot,
}

/// The two tensors' names under `vit.embeddings`, with their shapes for `model`.
pub(crate) fn embedding_tensors(model: &crate::nn::VitConfig) -> [(&'static str, Vec<usize>); 2] {
    let d = model.hidden_size;
    [("cls_token", vec![1, 1, d]), ("position_embeddings", vec![1, model.tokens(), d])]
}

/// Builds [`SavedEmbeddings`]: from the file, or as copies of the base.
pub(crate) fn embeddings(build: &mut Build<'_>) -> Result<SavedEmbeddings> {
    let [cls, pos] = embedding_tensors(build.model).map(|(name, shape)| {
        let base = format!("{EMBEDDINGS}.{name}");
        let key = format!("{PEFT_PREFIX}{base}");
        if build.is_file() {
            build.trainable(&key, &shape, Init::Zeros)
        } else {
            Ok(build.params_mut().train(key, Value::Base(base)))
        }
    });
    Ok(SavedEmbeddings { cls_token: cls?, position_embeddings: pos? })
}

type Head = (Option<HostTensor>, Option<HostTensor>, usize);

/// The classifier's weight and bias from the file (any label count, the model's width), a
/// fresh zero head of `num_labels`, or `None` to copy the base head.
fn classifier(build: &mut Build<'_>, wk: &str, bk: &str, base: &[usize], num_labels: Option<usize>) -> Result<Head> {
    let d = base[1];
    if let Some(w) = build.source_any_shape(wk)? {
        let path = build.weights_path();
        let bad = |key: &str, expected: String, got: &[usize]| Error::TensorMismatch {
            path: path.clone(),
            key: key.to_string(),
            expected,
            got: format!("shape {got:?}"),
        };
        if w.shape.len() != 2 || w.shape[1] != d || w.shape[0] == 0 {
            return Err(bad(wk, format!("shape [labels, {d}]"), &w.shape));
        }
        // As many labels as a model's config may have, so the merged model's config holds them.
        let max = crate::nn::config::MAX_DIM;
        if w.shape[0] > max {
            return Err(bad(wk, format!("shape [labels, {d}] with at most {max} labels"), &w.shape));
        }
        let k = w.shape[0];
        if let Some(n) = num_labels
            && n != k
        {
            return Err(Error::Config {
                path: build.config_path.to_path_buf(),
                key: "num_labels".into(),
                message: format!("is {n} but the adapter's classifier has {k} labels"),
            });
        }
        let b =
            build.source_any_shape(bk)?.ok_or_else(|| Error::MissingTensor { path: path.clone(), key: bk.into() })?;
        if b.shape != [k] {
            return Err(bad(bk, format!("shape [{k}]"), &b.shape));
        }
        return Ok((Some(w), Some(b), k));
    }
    match num_labels {
        Some(k) => {
            Ok((Some(build.zeros("classifier.weight", &[k, d])?), Some(build.zeros("classifier.bias", &[k])?), k))
        }
        None => Ok((None, None, base[0])),
    }
}
