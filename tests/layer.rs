//! One ViT transformer layer (LN → attention → residual → LN → MLP → residual), as
//! `Vit::layer_forward` computes it, against PyTorch in float64
//! (`scripts/fixtures_layer.py` → `tests/fixtures/layer_torch.safetensors`): the output,
//! the gradient of `⟨y, w⟩` with respect to the input, and with respect to every weight.

mod common;

use common::{assert_close, fixture, gpu, tol};
use peft_wgpu::io::safetensors::HostTensor;
use peft_wgpu::nn::{NoHooks, Vit, VitConfig, VitWeights};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::{Gpu, Tape, Tensor};

const LAYER: &str = "vit.encoder.layer.0.";

/// The fixture's layer: D 24, 3 heads, MLP 96, eps 1e-6, tokens = CLS + a 4×4 grid.
fn config() -> VitConfig {
    VitConfig {
        hidden_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 3,
        intermediate_size: 96,
        image_size: [4, 4],
        patch_size: [1, 1],
        num_channels: 1,
        layer_norm_eps: 1e-6,
        qkv_bias: true,
        num_labels: 2,
        id2label: Vec::new(),
        problem_type: None,
    }
}

/// A one-layer ViT whose layer holds the fixture's weights (the rest is random and unused).
fn model(gpu: &Gpu, f: &common::Fixture) -> Vit {
    let mut weights = VitWeights::random(&config(), 7).unwrap();
    let mut replaced = 0;
    for (key, t) in weights.tensors.iter_mut() {
        if key.starts_with(LAYER) {
            *t = HostTensor::new(f.shape(key), f.f32(key)).expect("fixture tensor");
            replaced += 1;
        }
    }
    assert_eq!(replaced, 16, "the fixture holds all 16 weights of the layer");
    Vit::from_weights(gpu, &weights).expect("upload")
}

/// What one run of the layer gives: `y`, `∂x` and the weight gradients by name.
struct Run {
    y: Vec<f32>,
    dx: Vec<f32>,
    weight_grads: Vec<(String, Vec<f32>)>,
}

/// Runs the layer on the fixture's `x` and backpropagates `⟨y, w⟩`; the weight gradients
/// are there only when `trainable`.
fn run(trainable: bool) -> Run {
    let gpu = gpu();
    let f = fixture("layer_torch.safetensors");
    let vit = model(&gpu, &f);
    let mut tape = Tape::new(&gpu);
    let vars = vit.bind(&mut tape, trainable);
    let x = Tensor::from_slice(&gpu, &f.f32("x"), &f.shape("x")).expect("upload x");
    let w = Tensor::from_slice(&gpu, &f.f32("w"), &f.shape("w")).expect("upload w");
    let x = tape.param(&x);
    let w = tape.constant(&w);
    let y = vit.layer_forward(&mut tape, &vars, &NoHooks, 0, &x, 1, (4, 4)).expect("layer");
    assert_eq!(y.shape(), [2, 17, 24]);
    let yw = mul_var(&mut tape, &y, &w).expect("y ⊙ w");
    let loss = sum_var(&mut tape, &yw).expect("⟨y, w⟩");
    let layer_vars: Vec<(String, peft_wgpu::Var)> =
        vars.iter().filter(|(k, _)| k.starts_with(LAYER)).map(|(k, v)| (k.to_string(), v.clone())).collect();
    let y_value = y.value().clone();
    let grads = tape.backward(&loss).expect("backward");
    let dx = gpu.read(grads.get(&x).expect("x has a gradient")).expect("read ∂x");
    let weight_grads =
        layer_vars.iter().filter_map(|(k, v)| grads.get(v).map(|g| (k.clone(), gpu.read(g).expect("read")))).collect();
    Run { y: gpu.read(&y_value).expect("read y"), dx, weight_grads }
}

#[test]
fn layer_forward_and_input_gradient_match_pytorch() {
    let f = fixture("layer_torch.safetensors");
    let Run { y, dx, weight_grads } = run(false);
    // Each output sums ~96 products through two residual branches.
    assert_close("layer output", &y, &f.f64("y"), tol(8.0, 96), 1e-6);
    assert_close("∂x of ⟨y, w⟩", &dx, &f.f64("dx"), tol(16.0, 96 * 17), 1e-5);
    assert!(weight_grads.is_empty(), "frozen weights got gradients: {:?}", weight_grads.iter().map(|g| &g.0));
}

#[test]
fn layer_weight_gradients_match_pytorch() {
    let f = fixture("layer_torch.safetensors");
    let Run { y, dx, weight_grads } = run(true);
    assert_close("layer output (trainable weights)", &y, &f.f64("y"), tol(8.0, 96), 1e-6);
    assert_close("∂x (trainable weights)", &dx, &f.f64("dx"), tol(16.0, 96 * 17), 1e-5);
    assert_eq!(weight_grads.len(), 16, "every layer weight gets a gradient");
    for (key, g) in &weight_grads {
        // A weight gradient sums over the 34 tokens of the batch.
        assert_close(&format!("∂{key}"), g, &f.f64(&format!("grad.{key}")), tol(16.0, 96 * 34), 1e-5);
    }
}
