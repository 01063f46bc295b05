//! Folding an adapter into the model's weights: LoRA and FLoRA into the weights they adapt,
//! saved modules in place, RLP's prompts as one `prompt_embeddings` matrix.

use super::config::EMBEDDINGS;
use super::{Adapter, Kind, flora, lora};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::HostTensor;
use crate::nn::{ModuleId, Naming, VitWeights};

impl Adapter {
    /// The weights of `base` with this adapter folded in. MoPPA's filter is not a weight
    /// change and cannot be merged.
    /// `base` must be of the architecture the adapter was made for.
    pub fn merge(&self, gpu: &Gpu, base: &VitWeights) -> Result<VitWeights> {
        self.check_base(base)?;
        if base.headless && !self.has_own_head() {
            return Err(Error::invalid("model", crate::train::HEADLESS));
        }
        let read = |slot: usize| -> Result<HostTensor> {
            let t = &self.trainable[slot].tensor;
            HostTensor::new(t.shape().to_vec(), gpu.read(t)?)
        };
        let mut out = base.clone();
        let weight_key = |m: ModuleId| format!("{}.weight", m.path(Naming::OnDisk));
        match &self.kind {
            Kind::Lora(ms) => {
                for m in ms {
                    let w = out.tensors.get_mut(&weight_key(m.module)).ok_or_else(|| missing(m.module))?;
                    lora::merge(m, &read(m.a)?, &read(m.b)?, w);
                    finite(&self.weights_path, &weight_key(m.module), w)?;
                }
            }
            Kind::Flora(ms) => {
                for m in ms {
                    let factors = m.factors.iter().map(|&s| read(s)).collect::<Result<Vec<_>>>()?;
                    let core = read(m.core)?;
                    let w = out.tensors.get_mut(&weight_key(m.module)).ok_or_else(|| missing(m.module))?;
                    flora::merge(m, &core, &factors, w);
                    finite(&self.weights_path, &weight_key(m.module), w)?;
                }
            }
            Kind::Rlp(r) => {
                let p0 = &self.frozen[r.p0].tensor;
                let p0 = HostTensor::new(p0.shape().to_vec(), gpu.read(p0)?)?;
                let mut prompts = r.merge(&p0, &read(r.a)?, &read(r.b)?);
                finite(&self.weights_path, crate::nn::weights::PROMPT_KEY, &prompts)?;
                // A model merged before keeps its prompts: the adapter's come first, right
                // after CLS, as in the forward pass that trained it.
                if let Some(old) = &base.prompts {
                    prompts.data.extend_from_slice(&old.data);
                    prompts.shape[0] += old.shape[0];
                }
                out.prompts = Some(prompts);
            }
            Kind::Moppa(_) => {
                // About the adapter given (an input), not a flag: named by its config's type.
                return Err(Error::Config {
                    path: self.weights_path.with_file_name(super::CONFIG_FILE),
                    key: "peft_type".into(),
                    message: "is MOPPA: a MoPPA adapter filters tokens in the frequency domain and cannot be \
                              folded into the ViT's weights; evaluate it with `eval --adapter` instead"
                        .into(),
                });
            }
        }
        let read_frozen = |slot: usize| -> Result<HostTensor> {
            let t = &self.frozen[slot].tensor;
            HostTensor::new(t.shape().to_vec(), gpu.read(t)?)
        };
        for s in &self.saved {
            let path = s.module.path(Naming::OnDisk);
            let read_slot = |slot| if s.frozen { read_frozen(slot) } else { read(slot) };
            out.tensors.insert(format!("{path}.weight"), read_slot(s.weight)?);
            if let Some(b) = s.bias {
                out.tensors.insert(format!("{path}.bias"), read_slot(b)?);
            }
        }
        for b in &self.biases {
            out.tensors.insert(format!("{}.bias", b.module.path(Naming::OnDisk)), read(b.slot)?);
        }
        if let Some(e) = self.embeddings {
            let [cls, pos] = super::saved::embedding_tensors(&base.config).map(|(name, _)| name);
            out.tensors.insert(format!("{EMBEDDINGS}.{cls}"), read(e.cls_token)?);
            out.tensors.insert(format!("{EMBEDDINGS}.{pos}"), read(e.position_embeddings)?);
        }
        // A model without a classifier has the adapter's now (required above).
        out.headless = false;
        out.config.num_labels = self.num_labels;
        // A head for a new task (`num_labels` in the adapter config), or of another size, has
        // none of the base's label names: transformers' `LABEL_i` stand in.
        if self.config.num_labels.is_some() || out.config.id2label.len() != self.num_labels {
            out.config.id2label.clear();
        }
        Ok(out)
    }

    /// Fails unless `base` has the architecture of the model this adapter was made for and
    /// each weight the adapter changes has the shape that model gives it.
    fn check_base(&self, base: &VitWeights) -> Result<()> {
        self.check_model("merge", &base.config)?;
        base.check()
    }
}

impl Adapter {
    /// Fails, naming `op`, unless `model` has the architecture of the model this adapter was
    /// made for (its tensors fit only that one).
    pub fn check_model(&self, op: &str, model: &crate::nn::VitConfig) -> Result<()> {
        let shape_of = |c: &crate::nn::VitConfig| {
            let sizes = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size);
            (sizes, c.image_size, c.patch_size, c.num_channels, c.qkv_bias, c.num_labels)
        };
        if shape_of(&self.model) != shape_of(model) {
            return Err(Error::invalid(
                op,
                format!(
                    "the adapter was made for another model ({}) than this one ({})",
                    describe(&self.model),
                    describe(model)
                ),
            ));
        }
        Ok(())
    }
}

/// A model's architecture in a few words, for messages.
fn describe(c: &crate::nn::VitConfig) -> String {
    format!(
        "D {}, {} layers, {} heads, MLP {}, images {:?} of {:?} patches, {} channels, {} labels",
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.image_size,
        c.patch_size,
        c.num_channels,
        c.num_labels
    )
}

/// Fails, naming `key` and the first value, where folding the adapter in left a value that
/// f32 cannot hold (an adapter whose change overflows): a model so written would not load.
/// The error is about the adapter's tensors: [`Error::Format`] of `weights`, its file.
fn finite(weights: &std::path::Path, key: &str, merged: &HostTensor) -> Result<()> {
    match merged.data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Format {
            path: weights.to_path_buf(),
            message: format!(
                "folding the adapter into `{key}` gives {} at index {:?}, beyond f32: the adapter's \
                 change to it is too large to merge; evaluate it with `eval --adapter` instead",
                merged.data[i],
                crate::io::safetensors::unravel(i, &merged.shape)
            ),
        }),
    }
}

fn missing(m: ModuleId) -> Error {
    Error::invalid("merge", format!("the model has no weight for {}", m.path(Naming::OnDisk)))
}
