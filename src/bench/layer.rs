//! The training-step workloads: one ViT-B/16 layer with LoRA, with MoPPA, or trained in
//! full, and the demo-sized ViT with MoPPA and its classifier.

use std::path::Path;

use super::twin::{self, Tensors};
use super::{BenchOptions, Report, Size, ensure_close, time};
use crate::adapters::{Adapter, AdapterConfig};
use crate::autograd::{Gradients, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::json::JsonFile;
use crate::nn::{NoHooks, Vit, VitConfig, VitHooks, VitWeights};
use crate::ops::loss::cross_entropy_var;
use crate::ops::sum::mean_square_var;
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// What a layer step trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTraining {
    /// LoRA r 8, α 16 on query and value.
    Lora,
    /// The MoPPA pre-filter of the layer.
    Moppa,
    /// Every weight of the layer (full fine-tuning).
    Full,
}

impl LayerTraining {
    fn name(self) -> &'static str {
        match self {
            LayerTraining::Lora => "vitb_block_lora_train_step_b8",
            LayerTraining::Moppa => "vitb_block_moppa_train_step_b8",
            LayerTraining::Full => "vitb_block_full_train_step_b8",
        }
    }

    fn adapter_json(self) -> Option<&'static str> {
        match self {
            LayerTraining::Lora => {
                Some(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}"#)
            }
            LayerTraining::Moppa => Some(r#"{"peft_type": "MOPPA"}"#),
            LayerTraining::Full => None,
        }
    }
}

/// LoRA's `α / r` in [`LayerTraining::Lora`].
const LORA_SCALE: f64 = 2.0;
/// AdamW's learning rate in every step.
const LR: f64 = 1e-3;

/// ViT-B/16 with one layer: D 768, 12 heads, MLP 3072, 224² images of 3 channels (197 tokens).
pub fn vitb_layer_config() -> VitConfig {
    VitConfig {
        hidden_size: 768,
        num_hidden_layers: 1,
        num_attention_heads: 12,
        intermediate_size: 3072,
        image_size: [224, 224],
        patch_size: [16, 16],
        num_channels: 3,
        layer_norm_eps: 1e-12,
        qkv_bias: true,
        num_labels: 2,
        id2label: Vec::new(),
        problem_type: None,
    }
}

/// The small layer the checks (and tiny runs) use: D 32, 4 heads, MLP 64, and ViT-B/16's
/// 197 tokens (a 14×14 grid and CLS), so that the check runs the spectral kernels of that
/// grid, which the timed MoPPA step uses.
fn small_layer_config() -> VitConfig {
    VitConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_attention_heads: 4,
        image_size: [14, 14],
        patch_size: [1, 1],
        num_channels: 1,
        layer_norm_eps: 1e-6,
        ..vitb_layer_config()
    }
}

fn adapter(gpu: &Gpu, vit: &Vit, json: &str, seed: u64) -> Result<Adapter> {
    let path = Path::new("<bench adapter_config.json>");
    let config = AdapterConfig::from_json(&JsonFile::parse(path, json.as_bytes())?)?;
    Adapter::new(gpu, config, path, vit, seed)
}

/// One forward and backward pass: the loss, the gradients, and the trainable leaves by name.
struct Pass {
    loss: Tensor,
    grads: Gradients,
    trainable: Vec<(String, Var)>,
    input: Option<Var>,
}

/// A one-layer training step and everything it keeps between steps.
struct LayerStep {
    config: VitConfig,
    vit: Vit,
    adapter: Option<Adapter>,
    training: LayerTraining,
    optimizer: Optimizer,
    x: Tensor,
}

impl LayerStep {
    fn new(gpu: &Gpu, config: &VitConfig, training: LayerTraining, batch: usize, seed: u64) -> Result<LayerStep> {
        let vit = Vit::from_weights(gpu, &VitWeights::random(config, seed)?)?;
        let adapter = training.adapter_json().map(|j| adapter(gpu, &vit, j, seed + 1)).transpose()?;
        let params: Vec<Tensor> = match &adapter {
            Some(a) => a.trainable().iter().map(|p| p.tensor.clone()).collect(),
            None => layer_weights(&vit).map(|(_, t)| t.clone()).collect(),
        };
        let optimizer = Optimizer::new(gpu, OptimizerKind::adamw(), LR, &params)?;
        let x_host = Rng::new(seed + 2).normal_vec(batch * config.tokens() * config.hidden_size, 0.0, 1.0);
        let x = Tensor::from_slice(gpu, &x_host, &[batch, config.tokens(), config.hidden_size])?;
        Ok(LayerStep { config: config.clone(), vit, adapter, training, optimizer, x })
    }

    /// `loss = mean(layer(x)²)` and its gradients for the trainable tensors and `x`.
    fn pass(&self, gpu: &Gpu) -> Result<Pass> {
        let mut tape = Tape::new(gpu);
        let full = self.training == LayerTraining::Full;
        let base = self.vit.bind(&mut tape, full);
        let bound = self.adapter.as_ref().map(|a| a.bind(&mut tape));
        let x = tape.param(&self.x);
        let hooks: &dyn VitHooks = match &bound {
            Some(b) => b,
            None => &NoHooks,
        };
        let grid = self.config.grid();
        let y = self.vit.layer_forward(&mut tape, &base, hooks, 0, &x, 1, grid)?;
        let loss = mean_square_var(&mut tape, &y)?;
        let trainable: Vec<(String, Var)> = match (&self.adapter, &bound) {
            (Some(a), Some(b)) => a.trainable().iter().map(|p| p.key.clone()).zip(b.vars().iter().cloned()).collect(),
            _ => base.iter().filter(|(k, _)| is_layer_weight(k)).map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        drop(bound);
        let value = loss.value().clone();
        let grads = tape.backward(&loss)?;
        Ok(Pass { loss: value, grads, trainable, input: Some(x) })
    }

    fn step(&mut self, gpu: &Gpu) -> Result<()> {
        let pass = self.pass(gpu)?;
        let list = pass.grads.of(pass.trainable.iter().map(|(_, v)| v))?;
        self.optimizer.step(&list)
    }

    /// The model's and the adapter's tensors, read back, by name.
    fn tensors(&self, gpu: &Gpu) -> Result<Tensors> {
        read_tensors(gpu, &self.vit, self.adapter.as_ref())
    }
}

fn is_layer_weight(key: &str) -> bool {
    key.starts_with("vit.encoder.layer.0.")
}

fn layer_weights(vit: &Vit) -> impl Iterator<Item = (&String, &Tensor)> {
    vit.weights().iter().filter(|(k, _)| is_layer_weight(k))
}

fn read_tensors(gpu: &Gpu, vit: &Vit, adapter: Option<&Adapter>) -> Result<Tensors> {
    let read = |t: &Tensor| -> Result<Vec<f64>> { Ok(gpu.read(t)?.into_iter().map(f64::from).collect()) };
    let mut out = Tensors::new();
    for (k, t) in vit.weights() {
        out.insert(k.clone(), read(t)?);
    }
    if let Some(a) = adapter {
        for p in a.trainable().iter().chain(a.frozen()) {
            out.insert(p.key.clone(), read(&p.tensor)?);
        }
    }
    Ok(out)
}

/// Checks a pass against the twin `loss_of(tensors, input)`: the loss, then the derivative
/// along a random direction of the trainable tensors and (when there is one) of the input,
/// each against central differences of the twin. Returns the largest relative error.
fn check_pass(
    gpu: &Gpu,
    name: &str,
    pass: &Pass,
    tensors: &Tensors,
    input: &[f64],
    loss_of: &dyn Fn(&Tensors, &[f64]) -> f64,
) -> Result<f64> {
    let got = f64::from(gpu.read(&pass.loss)?[0]);
    let want = loss_of(tensors, input);
    let loss_error = (got - want).abs() / want.abs().max(1e-12);
    ensure_close(name, "the loss", loss_error, 1e-4)?;
    let mut rng = Rng::new(99);
    // A direction scaled to each tensor's size, so every tensor moves by a similar fraction.
    let mut direction = |v: &[f64]| -> Vec<f64> {
        let rms = (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt().max(1e-2);
        (0..v.len()).map(|_| rms * rng.normal()).collect()
    };
    let mut worst = loss_error;
    let h = 1e-5;
    // Along the trainable tensors.
    let dirs: Vec<(String, Vec<f64>)> =
        pass.trainable.iter().map(|(k, _)| (k.clone(), direction(&tensors[k]))).collect();
    let (mut dot, mut mag) = (0.0, 0.0);
    for ((key, var), (_, dir)) in pass.trainable.iter().zip(&dirs) {
        let g = pass
            .grads
            .get(var)
            .ok_or_else(|| Error::invalid(format!("bench {name}"), format!("`{key}` got no gradient")))?;
        for (g, d) in gpu.read(g)?.iter().zip(dir) {
            dot += f64::from(*g) * d;
            mag += (f64::from(*g) * d).abs();
        }
    }
    let shifted = |sign: f64| {
        let mut t = tensors.clone();
        for (key, dir) in &dirs {
            let v = t.get_mut(key).expect("a trainable tensor is in the map");
            v.iter_mut().zip(dir).for_each(|(v, d)| *v += sign * h * d);
        }
        loss_of(&t, input)
    };
    let fd = (shifted(1.0) - shifted(-1.0)) / (2.0 * h);
    let error = (dot - fd).abs() / mag.max(1e-12);
    ensure_close(name, "the derivative along the trainable tensors", error, 2e-3)?;
    worst = worst.max(error);
    // Along the input.
    if let Some(x) = &pass.input {
        let g = gpu.read(
            pass.grads.get(x).ok_or_else(|| Error::invalid(format!("bench {name}"), "the input got no gradient"))?,
        )?;
        let dir = direction(input);
        let dot: f64 = g.iter().zip(&dir).map(|(g, d)| f64::from(*g) * d).sum();
        let mag: f64 = g.iter().zip(&dir).map(|(g, d)| (f64::from(*g) * d).abs()).sum();
        let moved = |sign: f64| -> Vec<f64> { input.iter().zip(&dir).map(|(x, d)| x + sign * h * d).collect() };
        let fd = (loss_of(tensors, &moved(1.0)) - loss_of(tensors, &moved(-1.0))) / (2.0 * h);
        let error = (dot - fd).abs() / mag.max(1e-12);
        ensure_close(name, "the derivative along the input", error, 2e-3)?;
        worst = worst.max(error);
    }
    Ok(worst)
}

/// A ViT-B layer step (tiny: the small layer, batch 2). The check runs the same code on the
/// small layer after one step (so LoRA's `B` is no longer zero) against the f64 twin.
pub(crate) fn vitb_block(gpu: &Gpu, options: &BenchOptions, training: LayerTraining) -> Result<Report> {
    let name = training.name();
    let check = {
        let small = small_layer_config();
        let mut s = LayerStep::new(gpu, &small, training, 2, 5)?;
        s.step(gpu)?;
        let pass = s.pass(gpu)?;
        let tensors = s.tensors(gpu)?;
        let x: Vec<f64> = gpu.read(&s.x)?.into_iter().map(f64::from).collect();
        let loss_of = |t: &Tensors, x: &[f64]| twin::mean_square(&twin::layer(t, &small, 0, x, 2, LORA_SCALE));
        check_pass(gpu, name, &pass, &tensors, &x, &loss_of)?
    };
    let (config, batch) = match options.size {
        Size::Full => (vitb_layer_config(), 8),
        Size::Tiny => (small_layer_config(), 2),
    };
    let mut s = LayerStep::new(gpu, &config, training, batch, 11)?;
    let t = time(gpu, options.warmup, options.repeats(3), || s.step(gpu))?;
    let (peak_bytes, step_bytes) = peak_of(gpu, || s.step(gpu))?;
    let trained = match &s.adapter {
        Some(a) => a.num_trainable(),
        None => layer_weights(&s.vit).map(|(_, t)| t.len()).sum(),
    };
    Ok(Report {
        peak_bytes: Some(peak_bytes),
        step_bytes: Some(step_bytes),
        check_error: check,
        checked: "loss and directional derivatives (adapter, input) of a D 32 layer on the 14×14 grid against the f64 \
                  twin"
            .into(),
        note: Some(format!("{trained} trainable values")),
        ..Report::timed(name, t)
    })
}

/// Peak live device bytes during one run of `run`, and how many of them it allocated.
fn peak_of(gpu: &Gpu, run: impl FnOnce() -> Result<()>) -> Result<(u64, u64)> {
    gpu.sync()?;
    let before = gpu.memory().live_bytes;
    gpu.reset_peak_memory();
    run()?;
    gpu.sync()?;
    let peak = gpu.memory().peak_bytes;
    Ok((peak, peak.saturating_sub(before)))
}

/// The demo model (embedded in the binary) and what it is.
fn tiny_vit(gpu: &Gpu) -> Result<(Vit, String)> {
    let vit = Vit::from_weights(gpu, &crate::demo::model::pretrained()?)?;
    Ok((vit, "the demo's pretrained model (image 8, patch 2, hidden 32, 2 layers, 4 heads)".into()))
}

/// A training step of a ViT with MoPPA and its classifier on a batch of images.
struct VitStep {
    adapter: Adapter,
    optimizer: Optimizer,
    images: Tensor,
    labels: Tensor,
}

impl VitStep {
    fn new(gpu: &Gpu, vit: &Vit, batch: usize, seed: u64) -> Result<VitStep> {
        let json = r#"{"peft_type": "MOPPA", "modules_to_save": ["classifier"]}"#;
        let adapter = adapter(gpu, vit, json, seed)?;
        let params: Vec<Tensor> = adapter.trainable().iter().map(|p| p.tensor.clone()).collect();
        let optimizer = Optimizer::new(gpu, OptimizerKind::adamw(), LR, &params)?;
        let c = &vit.config;
        let mut rng = Rng::new(seed + 1);
        let [h, w] = c.image_size;
        let pixels = rng.normal_vec(batch * c.num_channels * h * w, 0.0, 1.0);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(adapter.num_labels()) as u32).collect();
        Ok(VitStep {
            images: Tensor::from_slice(gpu, &pixels, &[batch, c.num_channels, h, w])?,
            labels: Tensor::from_u32(gpu, &labels, &[batch])?,
            adapter,
            optimizer,
        })
    }

    fn pass(&self, gpu: &Gpu, vit: &Vit) -> Result<Pass> {
        let mut tape = Tape::new(gpu);
        let base = vit.bind(&mut tape, false);
        let bound = self.adapter.bind(&mut tape);
        let images = tape.constant(&self.images);
        let logits = vit.forward(&mut tape, &base, &images, &bound)?;
        let loss = cross_entropy_var(&mut tape, &logits, &self.labels)?;
        let trainable =
            self.adapter.trainable().iter().map(|p| p.key.clone()).zip(bound.vars().iter().cloned()).collect();
        drop(bound);
        let value = loss.value().clone();
        Ok(Pass { loss: value, grads: tape.backward(&loss)?, trainable, input: None })
    }

    fn step(&mut self, gpu: &Gpu, vit: &Vit) -> Result<()> {
        let pass = self.pass(gpu, vit)?;
        let list = pass.grads.of(pass.trainable.iter().map(|(_, v)| v))?;
        self.optimizer.step(&list)
    }
}

/// The demo model's training step with MoPPA and the classifier, batch 64 (tiny: 4). The
/// check runs a batch of 4 against the f64 twin of the whole model.
pub(crate) fn tiny_vit_step(gpu: &Gpu, options: &BenchOptions) -> Result<Report> {
    let name = "tiny_vit_train_step_b64";
    let (vit, note) = tiny_vit(gpu)?;
    let check = {
        let mut s = VitStep::new(gpu, &vit, 4, 21)?;
        s.step(gpu, &vit)?;
        let pass = s.pass(gpu, &vit)?;
        let tensors = read_tensors(gpu, &vit, Some(&s.adapter))?;
        let images: Vec<f64> = gpu.read(&s.images)?.into_iter().map(f64::from).collect();
        let labels = gpu.read_u32(&s.labels)?;
        let c = vit.config.clone();
        let classes = s.adapter.num_labels();
        let loss_of = |t: &Tensors, images: &[f64]| {
            let logits = twin::vit_logits(t, &c, images, 4, LORA_SCALE);
            crate::reference::loss::cross_entropy(&logits, &labels, classes)
        };
        check_pass(gpu, name, &pass, &tensors, &images, &loss_of)?
    };
    let batch = if options.size == Size::Full { 64 } else { 4 };
    let mut s = VitStep::new(gpu, &vit, batch, 31)?;
    let t = time(gpu, options.warmup, options.repeats(7), || s.step(gpu, &vit))?;
    let (peak_bytes, step_bytes) = peak_of(gpu, || s.step(gpu, &vit))?;
    Ok(Report {
        peak_bytes: Some(peak_bytes),
        step_bytes: Some(step_bytes),
        check_error: check,
        checked: "loss and directional derivative (adapter) of a batch of 4 against the f64 twin".into(),
        note: Some(note),
        ..Report::timed(name, t)
    })
}
