//! Named adapter tensors: host-side construction, upload, and the file keys they carry.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::HostTensor;
use crate::tensor::Tensor;

/// Prefix PEFT puts before module paths in adapter files.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// A tensor of an adapter with the key it has in `adapter_model.safetensors`.
#[derive(Clone, Debug)]
pub struct Param {
    /// File key.
    pub key: String,
    /// Value on the GPU.
    pub tensor: Tensor,
}

/// Index of a tensor in an adapter's trainable or frozen list.
pub(crate) type Slot = usize;

/// A value for a new adapter tensor: from the host, or a copy of a base model weight.
pub(crate) enum Value {
    /// Host values.
    Host(HostTensor),
    /// A copy of the base weight with this on-disk key (a saved module starts as the base
    /// module), made on the device at upload.
    Base(String),
}

/// Tensors collected while building an adapter, uploaded together.
#[derive(Default)]
pub(crate) struct ParamBuilder {
    trainable: Vec<(String, Value)>,
    frozen: Vec<(String, Value)>,
}

impl ParamBuilder {
    /// Adds a trainable tensor; returns its slot.
    pub(crate) fn train(&mut self, key: String, v: Value) -> Slot {
        self.trainable.push((key, v));
        self.trainable.len() - 1
    }

    /// Adds a frozen tensor; returns its slot.
    pub(crate) fn freeze(&mut self, key: String, v: Value) -> Slot {
        self.frozen.push((key, v));
        self.frozen.len() - 1
    }

    /// Uploads everything: (trainable, frozen); `base` holds the model's weights by on-disk
    /// name, for [`Value::Base`].
    pub(crate) fn upload(self, gpu: &Gpu, base: &BTreeMap<String, Tensor>) -> Result<(Vec<Param>, Vec<Param>)> {
        let up = |list: Vec<(String, Value)>| -> Result<Vec<Param>> {
            list.into_iter()
                .map(|(key, v)| {
                    let tensor = match v {
                        Value::Host(t) => Tensor::from_slice(gpu, &t.data, &t.shape)?,
                        Value::Base(name) => base
                            .get(&name)
                            .ok_or_else(|| Error::invalid("model weight", format!("the model has no `{name}`")))?
                            .deep_copy(gpu)?,
                    };
                    Ok(Param { key, tensor })
                })
                .collect()
        };
        Ok((up(self.trainable)?, up(self.frozen)?))
    }
}
