//! The five ways the demo fine-tunes the pretrained ViT on digits 5–9: four adapters through
//! the library's [`Adapter`] and [`crate::train::train`], and a head-only baseline.
//! Every method gets a fresh zero head of five labels (`modules_to_save: ["classifier"]`).

use std::path::Path;
use std::time::Instant;

use super::model::{FitOptions, fit};
use crate::adapters::{Adapter, AdapterConfig};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::json::JsonFile;
use crate::io::safetensors::HostTensor;
use crate::nn::{ModuleId, Vit, VitHooks, VitWeights};
use crate::optim::OptimizerKind;
use crate::tensor::Tensor;
use crate::train::{BatchOrder, TrainOptions, evaluate, train};

/// A fine-tuning method of the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// MoPPA pre-filters in every layer, heads as the model's attention heads.
    Moppa,
    /// FLoRA with rank 4 on query and value.
    Flora,
    /// LoRA with r 4, α 8 on query and value.
    Lora,
    /// RLP: 4 prompt tokens of rank 2.
    Rlp,
    /// Only the classifier is trained; the backbone stays as pretrained.
    HeadOnly,
}

impl Method {
    /// Every method, in the order of the demo's table.
    pub const ALL: [Method; 5] = [Method::Moppa, Method::Flora, Method::Lora, Method::Rlp, Method::HeadOnly];

    /// The name in the table and the plot.
    pub fn name(self) -> &'static str {
        match self {
            Method::Moppa => "MoPPA",
            Method::Flora => "FLoRA",
            Method::Lora => "LoRA",
            Method::Rlp => "RLP",
            Method::HeadOnly => "head only",
        }
    }

    /// AdamW learning rate (adapter and head share it): per method, the one of 3·10⁻³, 10⁻²,
    /// 3·10⁻² (and 10⁻¹ for MoPPA, RLP and the head) with the best accuracy on a validation
    /// fifth of the training images (every fifth), trained on the other four fifths for the
    /// default 600 steps of 16. The held-out images played no part in the choice. (Chosen
    /// with an earlier pretraining of the same model, before `data/digits_vit/` was remade
    /// by `examples/pretrain_digits.rs` as it stands.)
    pub fn lr(self) -> f64 {
        match self {
            Method::Moppa => 3e-2,
            Method::Flora => 1e-2,
            Method::Lora => 3e-3,
            Method::Rlp => 3e-2,
            Method::HeadOnly => 1e-1,
        }
    }

    /// The `adapter_config.json` of an adapter method (`None` for the head-only baseline).
    pub fn adapter_config(self) -> Option<&'static str> {
        let json = match self {
            Method::Moppa => r#"{"peft_type": "MOPPA", "modules_to_save": ["classifier"], "num_labels": 5}"#,
            Method::Flora => {
                r#"{"peft_type": "FLORA", "r": 4, "scale": 1.0, "target_modules": ["query", "value"],
                    "modules_to_save": ["classifier"], "num_labels": 5}"#
            }
            Method::Lora => {
                r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
                    "modules_to_save": ["classifier"], "num_labels": 5}"#
            }
            Method::Rlp => {
                r#"{"peft_type": "RLP", "num_prompt_tokens": 4, "r": 2, "scale": 1.0,
                    "modules_to_save": ["classifier"], "num_labels": 5}"#
            }
            Method::HeadOnly => return None,
        };
        Some(json)
    }
}

/// What fine-tuning with one method gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Trainable values (adapter tensors plus the head).
    pub trainable: usize,
    /// Held-out accuracy.
    pub accuracy: f64,
    /// Loss of every step.
    pub losses: Vec<f32>,
    /// Median wall time of one step (the first is left out: it builds the pipelines).
    pub ms_per_step: f64,
}

/// Fine-tunes `base` with `method` on `train_set` and evaluates on `held_out`;
/// `on_step(step, loss)` sees every step.
pub fn fine_tune(
    gpu: &Gpu,
    base: &VitWeights,
    method: Method,
    train_set: &Dataset,
    held_out: &Dataset,
    options: FitOptions,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<Outcome> {
    let vit = Vit::from_weights(gpu, base)?;
    let (mut losses, mut ticks) = (Vec::new(), Vec::new());
    let room = losses.try_reserve_exact(options.steps).and(ticks.try_reserve_exact(options.steps));
    room.map_err(|_| Error::invalid("steps", format!("{} steps' losses do not fit in memory", options.steps)))?;
    let mut record = |step: usize, loss: f32| {
        ticks.push(Instant::now());
        losses.push(loss);
        on_step(step, loss);
    };
    let started;
    let (trainable, accuracy) = match method.adapter_config() {
        Some(json) => {
            let path = Path::new("<demo>/adapter_config.json");
            let config = AdapterConfig::from_json(&JsonFile::parse(path, json.as_bytes())?)?;
            let adapter = Adapter::new(gpu, config, path, &vit, options.seed)?;
            let order = BatchOrder::Shuffled { seed: options.seed };
            let train_options = TrainOptions {
                steps: options.steps,
                batch_size: options.batch_size,
                lr: options.lr,
                optimizer: OptimizerKind::adamw(),
                order,
                seed: options.seed,
                micro_batch: None,
            };
            started = Instant::now();
            train(gpu, &vit, &adapter, train_set, &train_options, &mut |r| record(r.step, r.loss))?;
            (adapter.num_trainable(), evaluate(gpu, &vit, Some(&adapter), held_out, 64)?.accuracy)
        }
        None => {
            started = Instant::now();
            let head = train_head(gpu, &vit, train_set, options, &mut record)?;
            let trainable = head.iter().map(Tensor::len).sum();
            let mut tuned = base.clone();
            for (tensor, leaf) in head.iter().zip(["weight", "bias"]) {
                let host = HostTensor::new(tensor.shape().to_vec(), gpu.read(tensor)?)?;
                tuned.tensors.insert(format!("classifier.{leaf}"), host);
            }
            (trainable, evaluate(gpu, &Vit::from_weights(gpu, &tuned)?, None, held_out, 64)?.accuracy)
        }
    };
    let mut spans: Vec<f64> = ticks.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    if spans.is_empty() {
        spans = ticks.iter().map(|t| (*t - started).as_secs_f64() * 1e3).collect();
    }
    spans.sort_by(f64::total_cmp);
    let ms_per_step = spans.get(spans.len() / 2).copied().unwrap_or(f64::NAN);
    Ok(Outcome { trainable, accuracy, losses, ms_per_step })
}

/// Trains a fresh zero head `[labels, D]` + `[labels]` on the frozen backbone of `vit`;
/// returns the trained weight and bias.
fn train_head(
    gpu: &Gpu,
    vit: &Vit,
    data: &Dataset,
    options: FitOptions,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<[Tensor; 2]> {
    let (labels, d) = (vit.config.num_labels, vit.config.hidden_size);
    let head = [Tensor::zeros(gpu, &[labels, d])?, Tensor::zeros(gpu, &[labels])?];
    let mut forward = |tape: &mut Tape, images: &Var| {
        let base = vit.bind(tape, false);
        let hooks = Head { weight: tape.param(&head[0]), bias: tape.param(&head[1]) };
        let logits = vit.forward(tape, &base, images, &hooks)?;
        Ok((logits, vec![hooks.weight, hooks.bias]))
    };
    fit(gpu, data, &head, options, &mut forward, on_step)?;
    Ok(head)
}

/// Replaces the classifier's weight and bias; everything else as the base model.
struct Head {
    weight: Var,
    bias: Var,
}

impl VitHooks for Head {
    fn module_weights(&self, module: ModuleId) -> Option<(Var, Option<Var>)> {
        (module == ModuleId::Classifier).then(|| (self.weight.clone(), Some(self.bias.clone())))
    }
}

/// Held-out accuracy of the model with no adapter (the pretrained one on digits 0–4).
pub fn accuracy(gpu: &Gpu, weights: &VitWeights, data: &Dataset) -> Result<f64> {
    Ok(evaluate(gpu, &Vit::from_weights(gpu, weights)?, None, data, 64)?.accuracy)
}
