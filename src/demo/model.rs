//! The demo's small ViT: its architecture, a fresh initialisation, the pretrained weights
//! embedded from `data/digits_vit/`, and the loop that trains chosen tensors of it.
//!
//! The weights are made by this crate: `cargo run --release --example pretrain_digits`
//! trains every weight of a fresh model on digits 0–4 with [`pretrain`] and rewrites
//! `data/digits_vit/` (both files must exist to build the crate, so remaking them overwrites
//! the committed ones).

use std::path::Path;

use super::digits::{self, Part, Task};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::json::JsonFile;
use crate::io::safetensors::TensorFile;
use crate::nn::weights::expected_shapes;
use crate::nn::{NoHooks, Vit, VitConfig, VitWeights};
use crate::ops::loss::cross_entropy_var;
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::{BatchOrder, Batches, upload_batch};

const CONFIG: &[u8] = include_bytes!("../../data/digits_vit/config.json");
const WEIGHTS: &[u8] = include_bytes!("../../data/digits_vit/model.safetensors");

/// The demo ViT: 8×8 single-channel images in 2×2 patches (a 4×4 grid plus CLS), width 32,
/// 2 layers of 4 heads, MLP width 64, five labels.
pub fn architecture() -> VitConfig {
    VitConfig {
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        image_size: [8, 8],
        patch_size: [2, 2],
        num_channels: 1,
        layer_norm_eps: 1e-6,
        qkv_bias: true,
        num_labels: 5,
        id2label: (0..5).map(|d| d.to_string()).collect(),
        problem_type: None,
    }
}

/// Fresh weights as transformers initialises a ViT: every weight matrix, the CLS token and
/// the position embeddings `N(0, 0.02²)` truncated at ±2σ, biases 0, LayerNorm γ = 1, β = 0.
/// A config that fails [`VitConfig::check`] or is too large to hold is an error.
pub fn init_weights(config: &VitConfig, seed: u64) -> Result<VitWeights> {
    let mut rng = Rng::new(seed);
    VitWeights::generate(config, "init_weights", |key, _, n, data| {
        if key.contains("layernorm") && key.ends_with(".weight") {
            data.resize(n, 1.0);
        } else if key.ends_with(".bias") {
            data.resize(n, 0.0);
        } else {
            data.extend(rng.normal_vec(n, 0.0, 0.02).into_iter().map(|v| v.clamp(-0.04, 0.04)));
        }
    })
}

/// The pretrained demo model embedded in the binary (`data/digits_vit/`).
pub fn pretrained() -> Result<VitWeights> {
    let dir = Path::new("<embedded>/data/digits_vit");
    let config = VitConfig::from_json(&JsonFile::parse(&dir.join("config.json"), CONFIG)?)?;
    let file = TensorFile::from_bytes(&dir.join("model.safetensors"), WEIGHTS)?;
    let tensors = expected_shapes(&config)
        .into_iter()
        .map(|(key, shape)| Ok((key.clone(), file.f32_shaped(&key, &shape)?)))
        .collect::<Result<_>>()?;
    Ok(VitWeights { config, tensors, prompts: None, merged_adapters: Vec::new(), headless: false })
}

/// Steps, batch size, learning rate and seed of a run of [`fit`].
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW's learning rate (PyTorch's other defaults, weight decay 0.01).
    pub lr: f64,
    /// Cosine decay of the learning rate: `lr·½(1 + cos(π t / T))` at step `t` of `T`,
    /// instead of a constant `lr`.
    pub cosine: bool,
    /// Seed of the batch order.
    pub seed: u64,
}

/// Builds the forward pass of one step: binds what it needs on the tape and returns the
/// logits and the trainable variables, in the order of the tensors given to [`fit`].
pub type StepForward<'a> = dyn FnMut(&mut Tape, &Var) -> Result<(Var, Vec<Var>)> + 'a;

/// Trains `params` with AdamW on mean cross-entropy over seeded shuffled batches of `data`
/// (the same batches as [`crate::train::train`] with the same seed). `forward` builds each
/// step's logits from the images; `on_step(step, loss)` sees every step.
pub fn fit(
    gpu: &Gpu,
    data: &Dataset,
    params: &[Tensor],
    options: FitOptions,
    forward: &mut StepForward<'_>,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<()> {
    if options.steps == 0 || options.batch_size == 0 {
        return Err(Error::invalid("fit", "steps and batch size must be at least 1"));
    }
    let mut optimizer = Optimizer::new(gpu, OptimizerKind::adamw(), options.lr, params)?;
    let mut batches = Batches::new(BatchOrder::Shuffled { seed: options.seed }, data.len(), options.batch_size);
    for step in 0..options.steps {
        if options.cosine {
            let progress = step as f64 / options.steps as f64;
            optimizer.set_lr(options.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))?;
        }
        let (images, labels) = upload_batch(gpu, data, &batches.next_rows()?)?;
        let mut tape = Tape::new(gpu);
        let images = tape.constant(&images);
        let (logits, vars) = forward(&mut tape, &images)?;
        let loss = cross_entropy_var(&mut tape, &logits, &labels)?;
        let grads = tape.backward(&loss)?;
        let value = gpu.read(loss.value())?[0];
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss { step, value });
        }
        optimizer.step_vars(&grads, &vars)?;
        on_step(step, value);
    }
    gpu.sync()
}

/// Trains every weight of `weights` (patch embedding, CLS, position embeddings, LayerNorms,
/// all linears, the head) on the training digits 0–4, each also shifted by one pixel in four
/// directions ([`digits::with_shifts`]), and returns the trained weights.
pub fn pretrain(
    gpu: &Gpu,
    weights: &VitWeights,
    options: FitOptions,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<VitWeights> {
    let data = digits::with_shifts(&digits::split(Task::Pretrain, Part::Train)?)?;
    let vit = Vit::from_weights(gpu, weights)?;
    let params: Vec<Tensor> = vit.weights().values().cloned().collect();
    fit(
        gpu,
        &data,
        &params,
        options,
        &mut |tape, images| {
            let vars = vit.bind(tape, true);
            let logits = vit.forward(tape, &vars, images, &NoHooks)?;
            Ok((logits, vars.iter().map(|(_, v)| v.clone()).collect()))
        },
        on_step,
    )?;
    let mut trained = weights.clone();
    for (key, host) in &mut trained.tensors {
        let tensor = vit.weights().get(key).expect("the model was built from these weights");
        host.data = gpu.read(tensor)?;
    }
    Ok(trained)
}
