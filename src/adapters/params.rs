//! Named adapter tensors: host-side construction, upload, and the file keys they carry.

use crate::error::Result;
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

/// A value for a new adapter tensor: from the host, or a copy of a device tensor.
pub(crate) enum Value {
    /// Host values.
    Host(HostTensor),
    /// A copy of this device tensor (a saved module starts as the base module).
    CopyOf(Tensor),
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

    /// Uploads everything: (trainable, frozen).
    pub(crate) fn upload(self, gpu: &Gpu) -> Result<(Vec<Param>, Vec<Param>)> {
        let up = |list: Vec<(String, Value)>| -> Result<Vec<Param>> {
            list.into_iter()
                .map(|(key, v)| {
                    let tensor = match v {
                        Value::Host(t) => Tensor::from_slice(gpu, &t.data, &t.shape)?,
                        Value::CopyOf(t) => t.deep_copy(gpu)?,
                    };
                    Ok(Param { key, tensor })
                })
                .collect()
        };
        Ok((up(self.trainable)?, up(self.frozen)?))
    }
}
