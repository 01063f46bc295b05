//! The LoRA adapters this project writes for PEFT to load (`tests/fixtures/written_here/`),
//! made deterministically: a fresh adapter moved by seeded noise (non-zero `B` and head),
//! saved with `Adapter::save`. `examples/write_lora_for_peft.rs` writes them;
//! `scripts/check_peft_roundtrip.py` loads them with PEFT; `tests/peft_roundtrip.rs` checks
//! that this code still writes the same bytes.

use std::path::{Path, PathBuf};

use peft_wgpu::adapters::Adapter;
use peft_wgpu::io::safetensors::{self as st, HostTensor};
use peft_wgpu::nn::{Naming, Vit};
use peft_wgpu::{Gpu, Result};
use serde_json::{Value, json};

use super::support::{fixtures, logits, perturbed, pixels};

/// Images the logits are recorded on.
pub const IMAGES: usize = 4;

/// `(folder name, adapter config)`: one per module naming of `target_modules` (both are
/// written in transformers 5's naming), one saving modules that hold others, among them
/// `embeddings`, which names `vit.embeddings` and its `patch_embeddings` (written spelled out,
/// as PEFT cannot load that entry back), one for each of PEFT's `bias` settings that train
/// the model's biases, one with a new head of another label count, and one written in the
/// on-disk naming (see [`naming`]) for PEFT under transformers 4.
pub fn cases() -> [(&'static str, Value); 7] {
    [
        (
            "lora_on_disk",
            json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true,
                   "target_modules": ["query", "value", "projection"], "rank_pattern": {"value": 2},
                   "modules_to_save": ["classifier", "layer.1.layernorm_after"]}),
        ),
        (
            "lora_transformers5",
            json!({"peft_type": "LORA", "r": 4, "lora_alpha": 6, "target_modules": ["q_proj", "v_proj"],
                   "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"q_proj": 3}, "modules_to_save": ["classifier"]}),
        ),
        (
            "lora_saved_containers",
            json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "fc2"],
                   "modules_to_save": ["classifier", "embeddings", "layers.1.mlp"]}),
        ),
        (
            "lora_bias_all",
            json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value", "projection"],
                   "bias": "all", "modules_to_save": ["classifier"]}),
        ),
        (
            "lora_bias_lora_only",
            json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "fc1"],
                   "bias": "lora_only"}),
        ),
        (
            "lora_new_head",
            json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
                   "modules_to_save": ["classifier"], "num_labels": 3}),
        ),
        (
            "lora_transformers4",
            json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "value", "dense"],
                   "rank_pattern": {"dense": 2}, "modules_to_save": ["classifier"]}),
        ),
    ]
}

/// The naming case `name` is saved in: the on-disk one, which PEFT under transformers 4
/// reads, for `lora_transformers4`; transformers 5's, a new adapter's default, otherwise.
pub fn naming(name: &str) -> Naming {
    if name == "lora_transformers4" { Naming::OnDisk } else { Naming::Transformers5 }
}

/// Where the committed folders and logits live.
pub fn root() -> PathBuf {
    fixtures().join("written_here")
}

/// The adapter of case `index`, built under `scratch` (a folder it may clear).
pub fn adapter(gpu: &Gpu, vit: &Vit, index: usize, scratch: &Path) -> Adapter {
    let (name, cfg) = &cases()[index];
    let mut a = perturbed(gpu, vit, cfg, 100 + index as u64, 0.3, &scratch.join(format!("{name}_source")));
    a.set_lora_naming(naming(name));
    a
}

/// Writes every case's folder under `out` and `out/logits.safetensors` with the fixed
/// images (`pixel_values`) and each case's logits on them (key: the folder name).
pub fn write_all(gpu: &Gpu, vit: &Vit, out: &Path, scratch: &Path) -> Result<()> {
    let x = pixels(IMAGES);
    let mut tensors = vec![("pixel_values".to_string(), HostTensor::new(x.1.clone(), x.0.clone())?)];
    for (index, (name, _)) in cases().iter().enumerate() {
        let a = adapter(gpu, vit, index, scratch);
        a.save(gpu, &out.join(name))?;
        tensors
            .push((name.to_string(), HostTensor::new(vec![IMAGES, a.num_labels()], logits(gpu, vit, Some(&a), &x))?));
    }
    let list: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&out.join("logits.safetensors"), &list, None)
}
