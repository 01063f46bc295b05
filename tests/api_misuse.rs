//! Misuse of the library's API ends in an error naming what was wrong, never in a panic or a
//! silently wrong result: tensors of another device, `Var`s of another tape, shapes whose
//! size overflows, and an adapter merged into a model of another architecture.

mod common;

use common::gpu;
use peft_wgpu::adapters::AdapterConfig;
use peft_wgpu::nn::{Vit, VitConfig, VitWeights};
use peft_wgpu::ops::elementwise::{add, add_var, mul_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::{Gpu, Optimizer, OptimizerKind, Tape, Tensor};

/// The name adapter configs parsed here carry in messages.
const CONFIG_PATH: &str = "adapter_config.json";

/// The demo's architecture with random weights on `gpu`.
fn demo_vit(gpu: &Gpu) -> (VitConfig, Vit) {
    let config = peft_wgpu::demo::model::architecture();
    let vit = Vit::from_weights(gpu, &VitWeights::random(&config, 1).unwrap()).unwrap();
    (config, vit)
}

/// An adapter config from its JSON text.
fn adapter_config(json: &str) -> AdapterConfig {
    let file = peft_wgpu::io::json::JsonFile::parse(std::path::Path::new(CONFIG_PATH), json.as_bytes()).unwrap();
    AdapterConfig::from_json(&file).unwrap()
}

#[test]
fn tensors_of_another_gpu_are_refused_by_name() {
    let (g1, g2) = (gpu(), gpu());
    let a = Tensor::from_slice(&g1, &[1.0, 2.0], &[2]).unwrap();
    let b = Tensor::from_slice(&g2, &[3.0, 4.0], &[2]).unwrap();
    let g1_clone = g1.clone();
    assert!(a.is_on(&g1) && !a.is_on(&g2) && a.is_on(&g1_clone), "a clone of a Gpu is the same device");
    let another = |e: peft_wgpu::Error| assert!(e.to_string().contains("another Gpu"), "{e}");
    another(add(&g1, &a, &b).expect_err("b lives on g2"));
    another(g2.read(&a).expect_err("a lives on g1"));
    another(a.deep_copy(&g2).expect_err("a lives on g1"));
    another(
        Optimizer::new(&g2, OptimizerKind::Sgd { weight_decay: None }, 0.1, std::slice::from_ref(&a))
            .expect_err("params"),
    );
    let mut opt =
        Optimizer::new(&g1, OptimizerKind::Sgd { weight_decay: None }, 0.1, std::slice::from_ref(&a)).unwrap();
    let foreign_grad = Tensor::from_slice(&g2, &[1.0, 1.0], &[2]).unwrap();
    another(opt.step(&[Some(&foreign_grad)]).expect_err("a gradient of g2"));
    // Nothing was recorded for the refused calls: g1 still computes and reads correctly.
    assert_eq!(g1.read(&add(&g1, &a, &a).unwrap()).unwrap(), [2.0, 4.0]);
    // A leaf of g2 on a tape of g1, in a graph of reshapes (which dispatch nothing).
    let mut tape = Tape::new(&g1);
    let leaf = tape.param(&Tensor::from_slice(&g2, &[5.0], &[1]).unwrap());
    let column = peft_wgpu::ops::shape::reshape_var(&mut tape, &leaf, &[1, 1]).unwrap();
    let loss = peft_wgpu::ops::shape::reshape_var(&mut tape, &column, &[1]).unwrap();
    let e = tape.backward(&loss).expect_err("a leaf of another device");
    assert!(e.to_string().contains("another Gpu"), "{e}");

    // A model or an adapter of another device is named as such, before any kernel runs.
    use peft_wgpu::adapters::Adapter;
    use peft_wgpu::io::Dataset;
    let (config, vit1) = demo_vit(&g1);
    let path = std::path::Path::new(CONFIG_PATH);
    let json = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#;
    let e = Adapter::new(&g2, adapter_config(json), path, &vit1, 0).expect_err("a model of g1, an adapter of g2");
    assert!(e.to_string().contains("invalid model weights") && e.to_string().contains("another Gpu"), "{e}");
    let adapter1 = Adapter::new(&g1, adapter_config(json), path, &vit1, 0).unwrap();
    let [c, h, w] = [config.num_channels, config.image_size[0], config.image_size[1]];
    let data = Dataset::from_parts(path, [2, c, h, w], vec![0.1; 2 * c * h * w], vec![0, 1]).unwrap();
    let (_, vit2) = demo_vit(&g2);
    let e = peft_wgpu::train::evaluate(&g2, &vit2, Some(&adapter1), &data, 2).expect_err("an adapter of g1");
    assert!(e.to_string().contains("invalid adapter tensors") && e.to_string().contains("another Gpu"), "{e}");
    let e = peft_wgpu::train::evaluate(&g2, &vit1, None, &data, 2).expect_err("a model of g1");
    assert!(e.to_string().contains("invalid model weights") && e.to_string().contains("another Gpu"), "{e}");
}

#[test]
fn vars_of_another_tape_are_refused_by_name() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let (mut t1, mut t2) = (Tape::new(&gpu), Tape::new(&gpu));
    let a1 = t1.param(&x);
    let a2 = t2.param(&x);
    let b2 = t2.param(&x);
    // The loss of one tape given to another.
    let loss1 = sum_var(&mut t1, &a1).unwrap();
    let e = t2.backward(&loss1).expect_err("a loss of another tape");
    assert!(e.to_string().contains("another tape"), "{e}");
    // A Var of another tape inside an op: the tape refuses to run backward.
    let mut t3 = Tape::new(&gpu);
    let a3 = t3.param(&x);
    let y = mul_var(&mut t3, &a3, &b2).unwrap();
    let loss3 = sum_var(&mut t3, &y).unwrap();
    let e = t3.backward(&loss3).expect_err("a Var of another tape was used");
    assert!(e.to_string().contains("another tape"), "{e}");
    // Gradients answer only for their own tape's Vars.
    let mut t4 = Tape::new(&gpu);
    let a4 = t4.param(&x);
    let c4 = t4.constant(&x);
    let loss4 = sum_var(&mut t4, &a4).unwrap();
    let grads = t4.backward(&loss4).unwrap();
    assert!(grads.get(&a4).is_some());
    assert!(grads.get(&a2).is_none(), "a Var of another tape with the same node id");
    // The list an optimizer step takes refuses them: Vars kept from an earlier step would
    // otherwise make every later step update nothing.
    assert_eq!(grads.of(std::slice::from_ref(&a4)).unwrap().len(), 1);
    let e = grads.of(&[a4.clone(), a2]).expect_err("a Var of another tape");
    assert!(e.to_string().contains("variable 1") && e.to_string().contains("another tape"), "{e}");
    let e = grads.of(&[a4.clone(), c4]).expect_err("a constant");
    assert!(e.to_string().contains("variable 1") && e.to_string().contains("constant"), "{e}");
}

#[test]
fn sizes_that_overflow_are_errors() {
    use peft_wgpu::ops::conv::Conv2dSpec;
    use peft_wgpu::ops::shape::slice;
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[0.0, 1.0, 2.0, 3.0], &[4]).unwrap();
    assert!(x.reshape(&[(1 << 62) + 1, 4]).is_err(), "a product that overflows usize");
    assert!(Tensor::from_slice(&gpu, &[], &[1 << 32, 1 << 32]).is_err(), "an upload whose shape overflows");
    assert!(slice(&gpu, &x, 0, usize::MAX, 1).is_err(), "start + len overflows");
    assert_eq!(Conv2dSpec::out_size(4, 2, 0, 0), None, "stride 0");
    assert_eq!(Conv2dSpec::out_size(4, 2, 1, usize::MAX), None, "padding that overflows");
    assert_eq!(Conv2dSpec::out_size(4, 2, 2, 1), Some(3));
    // Random weights for a config too large to hold: an error before anything is generated.
    let config = peft_wgpu::demo::model::architecture();
    for huge in [
        VitConfig { hidden_size: 1 << 20, intermediate_size: 1 << 20, ..config.clone() },
        VitConfig { num_labels: 1 << 20, hidden_size: 1 << 20, ..config },
    ] {
        let e = VitWeights::random(&huge, 0).expect_err("too large");
        assert!(matches!(e, peft_wgpu::Error::TooLarge { .. }), "{e}");
    }
}

#[test]
fn empty_tensors_with_huge_sides_hold_nothing_and_their_sums_are_checked() {
    use peft_wgpu::ops::linear::linear;
    use peft_wgpu::ops::patch::patchify;
    use peft_wgpu::ops::shape::{concat, permute};
    let gpu = gpu();
    // A zero side means no elements, whichever side it is.
    for shape in [[usize::MAX, 0], [0, usize::MAX], [1 << 62, 0]] {
        let t = Tensor::zeros(&gpu, &shape).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert_eq!((t.len(), t.shape()), (0, &shape[..]));
        assert_eq!(permute(&gpu, &t, &[1, 0]).expect("permute").shape(), [shape[1], shape[0]]);
    }
    // The other sides' product must still fit, so that every product of sides does.
    let e = Tensor::zeros(&gpu, &[usize::MAX, 2, 0]).expect_err("sides whose product overflows");
    assert!(matches!(e, peft_wgpu::Error::TooLarge { .. }), "{e}");
    // Lengths along the axis whose sum overflows are an error, not a wrapped shape.
    let z = Tensor::zeros(&gpu, &[0, usize::MAX]).expect("empty");
    let e = concat(&gpu, &[&z, &z], 1).expect_err("the lengths overflow");
    assert!(e.to_string().contains("concat"), "{e}");
    // A linear layer with no inputs gives the bias in every row.
    let (x, w) = (Tensor::zeros(&gpu, &[2, 0]).unwrap(), Tensor::zeros(&gpu, &[3, 0]).unwrap());
    let b = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let y = linear(&gpu, &x, &w, Some(&b)).expect("linear with in = 0");
    assert_eq!(gpu.read(&y).unwrap(), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    // A zero patch is named as such.
    let images = Tensor::zeros(&gpu, &[1, 1, 4, 4]).unwrap();
    let e = patchify(&gpu, &images, [0, 0]).expect_err("patch 0×0");
    assert!(e.to_string().contains("patch sides of at least 1"), "{e}");
}

#[test]
fn configs_data_and_hyperparameters_built_in_code_are_checked() {
    use peft_wgpu::io::Dataset;
    let gpu = gpu();
    let good = peft_wgpu::demo::model::architecture();
    for bad in [
        VitConfig { patch_size: [0, 0], ..good.clone() },
        VitConfig { patch_size: [9, 9], ..good.clone() },
        VitConfig { num_attention_heads: 5, ..good.clone() },
        VitConfig { num_hidden_layers: 0, ..good.clone() },
        VitConfig { layer_norm_eps: 1e300, ..good.clone() },
    ] {
        let e = VitWeights::random(&bad, 1).expect_err("a bad config is refused");
        assert!(e.to_string().contains("ViT config"), "{e}");
        // The same config set on good weights after they were made.
        let weights = VitWeights { config: bad, ..VitWeights::random(&good, 1).unwrap() };
        let e = Vit::from_weights(&gpu, &weights).expect_err("a bad config is refused");
        assert!(e.to_string().contains("ViT config"), "{e}");
    }
    let mut weights = VitWeights::random(&good, 1).unwrap();
    weights.tensors.get_mut("vit.layernorm.bias").expect("final norm").data.pop();
    let e = Vit::from_weights(&gpu, &weights).expect_err("a tensor short of a value");
    assert!(e.to_string().contains("vit.layernorm.bias") && e.to_string().contains("31 values"), "{e}");
    weights.tensors.get_mut("vit.layernorm.bias").expect("final norm").data.push(0.0);
    weights.tensors.get_mut("vit.layernorm.weight").expect("final norm").shape = vec![3];
    assert!(Vit::from_weights(&gpu, &weights).is_err(), "a tensor of the wrong shape");
    let dir = std::env::temp_dir().join(format!("peft-wgpu-api-bad-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = weights.save(&dir).expect_err("weights that load would refuse are not written");
    assert!(e.to_string().contains("vit.layernorm.weight"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();

    let path = std::path::Path::new("in-memory");
    assert!(Dataset::from_parts(path, [0, 1, 8, 8], vec![], vec![]).is_err(), "no images");
    let data = Dataset::from_parts(path, [2, 1, 2, 2], vec![0.0; 8], vec![0, 1]).unwrap();
    let e = data.gather(&[1, 5]).expect_err("row 5 of 2");
    assert!(e.to_string().contains("row 5"), "{e}");

    let x = Tensor::zeros(&gpu, &[2]).unwrap();
    let sgd = OptimizerKind::Sgd { weight_decay: None };
    assert!(Optimizer::new(&gpu, sgd, 1e40, std::slice::from_ref(&x)).is_err(), "lr beyond f32");
    let adamw = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e300 };
    assert!(Optimizer::new(&gpu, adamw, 1e-3, std::slice::from_ref(&x)).is_err(), "weight decay beyond f32");
}

#[test]
fn an_adapter_merged_into_a_model_of_another_architecture_is_refused() {
    use peft_wgpu::adapters::Adapter;
    let gpu = gpu();
    let (config, vit) = demo_vit(&gpu);
    let path = std::path::Path::new(CONFIG_PATH);
    for json in [
        r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query", "projection"]}"#,
        r#"{"peft_type": "FLORA", "r": 2, "target_modules": ["projection"]}"#,
        r#"{"peft_type": "RLP", "num_prompt_tokens": 2, "r": 2}"#,
    ] {
        let adapter = Adapter::new(&gpu, adapter_config(json), path, &vit, 3).unwrap();
        for other in [
            VitConfig { hidden_size: 16, intermediate_size: 32, ..config.clone() },
            VitConfig { patch_size: [4, 4], ..config.clone() },
        ] {
            let e = adapter.merge(&gpu, &VitWeights::random(&other, 2).unwrap()).expect_err("another architecture");
            assert!(e.to_string().contains("another model"), "{json}: {e}");
        }
        assert!(adapter.merge(&gpu, &VitWeights::random(&config, 2).unwrap()).is_ok(), "{json}: its own architecture");
    }
}

#[test]
fn training_checks_the_adapter_the_batch_and_values_changed_in_code() {
    use peft_wgpu::adapters::{Adapter, AdapterKind};
    use peft_wgpu::io::Dataset;
    use peft_wgpu::train::{BatchOrder, TrainOptions, evaluate, train};
    let gpu = gpu();
    let (config, vit) = demo_vit(&gpu);
    let path = std::path::Path::new(CONFIG_PATH);
    let parse = adapter_config;
    let lora = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#;

    let mut cfg = parse(lora);
    let AdapterKind::Lora(l) = &mut cfg.kind else { panic!("LoRA") };
    l.lora_alpha = f64::NAN;
    let e = Adapter::new(&gpu, cfg, path, &vit, 1).expect_err("a NaN alpha");
    assert!(e.to_string().contains("lora_alpha"), "{e}");

    // Within f64 but past f32, as a file's value is refused.
    let mut cfg = parse(r#"{"peft_type": "MOPPA"}"#);
    let AdapterKind::Moppa(m) = &mut cfg.kind else { panic!("MoPPA") };
    m.entropy_scale = 1e300;
    let e = Adapter::new(&gpu, cfg, path, &vit, 1).expect_err("an entropy_scale past f32");
    assert!(e.to_string().contains("`entropy_scale`") && e.to_string().contains("f32"), "{e}");

    let mut cfg = parse(lora);
    let AdapterKind::Lora(l) = &mut cfg.kind else { panic!("LoRA") };
    l.rank_pattern = vec![("(query".into(), 1)];
    let e = Adapter::new(&gpu, cfg, path, &vit, 1).expect_err("a rank_pattern key that is no regex");
    assert!(e.to_string().contains("rank_pattern") && e.to_string().contains("`(query`"), "{e}");

    // A target regex built in code without anchors matches anywhere in the path, and is saved
    // so that it reads back with that meaning.
    let mut cfg = parse(r#"{"peft_type": "FLORA", "r": 2, "target_modules": "x"}"#);
    let AdapterKind::Flora(f) = &mut cfg.kind else { panic!("FLoRA") };
    f.target_modules = peft_wgpu::nn::Targets::Regex(
        peft_wgpu::nn::Pattern::new("query", peft_wgpu::nn::PatternUse::Anywhere).unwrap(),
    );
    let searched = Adapter::new(&gpu, cfg, path, &vit, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("peft-wgpu-api-regex-{}", std::process::id()));
    searched.save(&gpu, &dir).unwrap();
    let again = Adapter::load(&gpu, &dir, &vit).expect("the saved regex reads back");
    let keys = |a: &Adapter| a.trainable().iter().map(|p| p.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&again), keys(&searched));
    assert_eq!(keys(&again).len(), 3 * config.num_hidden_layers, "core and two factors of each layer's query");
    std::fs::remove_dir_all(&dir).unwrap();

    let adapter = Adapter::new(&gpu, parse(lora), path, &vit, 1).unwrap();
    let [c, h, w] = [config.num_channels, config.image_size[0], config.image_size[1]];
    let data = Dataset::from_parts(path, [2, c, h, w], vec![0.1; 2 * c * h * w], vec![0, 1]).unwrap();
    let options = |batch_size| TrainOptions {
        steps: 1,
        batch_size,
        lr: 1e-3,
        optimizer: OptimizerKind::Sgd { weight_decay: None },
        order: BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    };
    // A batch larger than the device takes is computed in pieces; one whose row numbers
    // alone overflow the address space cannot even be listed.
    let e = train(&gpu, &vit, &adapter, &data, &options(1 << 61), &mut |_| {}).expect_err("a batch beyond memory");
    assert!(e.to_string().contains("2305843009213693952: the list of its rows does not fit in memory"), "{e}");

    let one_label = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "num_labels": 1,
        "modules_to_save": ["classifier"]}"#;
    let one_label = Adapter::new(&gpu, parse(one_label), path, &vit, 1).unwrap();
    let zeros = Dataset::from_parts(path, [2, c, h, w], vec![0.1; 2 * c * h * w], vec![0, 0]).unwrap();
    let e = train(&gpu, &vit, &one_label, &zeros, &options(2), &mut |_| {}).expect_err("a one-label head");
    assert!(e.to_string().contains("cross-entropy over one class"), "{e}");

    let other = VitConfig { num_hidden_layers: 1, ..config.clone() };
    let other = Vit::from_weights(&gpu, &VitWeights::random(&other, 1).unwrap()).unwrap();
    let e = train(&gpu, &other, &adapter, &data, &options(2), &mut |_| {}).expect_err("another model");
    assert!(e.to_string().contains("another model"), "{e}");
    assert!(evaluate(&gpu, &other, Some(&adapter), &data, 2).is_err(), "evaluate on another model");
    train(&gpu, &vit, &adapter, &data, &options(2), &mut |_| {}).expect("its own model");

    // Non-finite values made in code are refused as the file loaders refuse them.
    let mut pixels = vec![0.1; 2 * c * h * w];
    pixels[c * h * w + 3] = f32::NAN;
    let e = Dataset::from_parts(path, [2, c, h, w], pixels, vec![0, 1]).expect_err("a NaN pixel");
    assert!(e.to_string().contains("image 1 is NaN"), "{e}");
    let mut changed = data;
    changed.pixels[c * h * w] = f32::INFINITY;
    let e = evaluate(&gpu, &vit, Some(&adapter), &changed, 2).expect_err("a pixel made infinite after the checks");
    assert!(e.to_string().contains("image 1 is inf"), "{e}");
    let mut steps = 0;
    let e = train(&gpu, &vit, &adapter, &changed, &options(2), &mut |_| steps += 1).expect_err("an infinite pixel");
    assert!(e.to_string().contains("image 1 is inf") && steps == 0, "refused before the first step: {e}");
    let mut weights = VitWeights::random(&config, 1).unwrap();
    weights.tensors.get_mut("classifier.bias").unwrap().data[2] = f32::NAN;
    let e = Vit::from_weights(&gpu, &weights).expect_err("a NaN weight");
    assert!(e.to_string().contains("`classifier.bias`") && e.to_string().contains("NaN at index 2"), "{e}");
    let first = adapter.trainable()[0].tensor.clone();
    let poisoned = Tensor::from_slice(&gpu, &vec![f32::NAN; first.len()], first.shape()).unwrap();
    let mut sgd = Optimizer::new(&gpu, OptimizerKind::Sgd { weight_decay: None }, 1.0, &[first]).unwrap();
    sgd.step(&[Some(&poisoned)]).unwrap(); // a diverged step, in place
    let dir = std::env::temp_dir().join(format!("peft-wgpu-api-nan-adapter-{}", std::process::id()));
    let e = adapter.save(&gpu, &dir).expect_err("an adapter holding NaN");
    assert!(e.to_string().contains("q_proj.lora_A.weight`") && e.to_string().contains("NaN"), "{e}");
    assert!(!dir.exists(), "nothing written");
}

#[test]
fn a_forward_pass_with_an_adapter_for_another_architecture_is_refused() {
    use peft_wgpu::adapters::Adapter;
    let gpu = gpu();
    let (config, vit) = demo_vit(&gpu);
    let path = std::path::Path::new(CONFIG_PATH);
    let json = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"]}"#;
    let adapter = Adapter::new(&gpu, adapter_config(json), path, &vit, 0).unwrap();
    let [c, h, w] = [config.num_channels, config.image_size[0], config.image_size[1]];
    let images = Tensor::zeros(&gpu, &[1, c, h, w]).unwrap();
    // One more layer (left unadapted) and one fewer (an adapted layer ignored): both refused.
    for layers in [config.num_hidden_layers + 1, config.num_hidden_layers - 1] {
        let other = VitConfig { num_hidden_layers: layers, ..config.clone() };
        let other = Vit::from_weights(&gpu, &VitWeights::random(&other, 1).unwrap()).unwrap();
        let mut tape = Tape::new(&gpu);
        let base = other.bind(&mut tape, false);
        let bound = adapter.bind(&mut tape);
        let x = tape.constant(&images);
        let e = other.forward(&mut tape, &base, &x, &bound).expect_err("an adapter for another model");
        assert!(e.to_string().contains("another model"), "{layers} layers: {e}");
    }
    let mut tape = Tape::new(&gpu);
    let (base, bound) = (vit.bind(&mut tape, false), adapter.bind(&mut tape));
    let x = tape.constant(&images);
    vit.forward(&mut tape, &base, &x, &bound).expect("its own model");
    let none = tape.constant(&Tensor::zeros(&gpu, &[0, c, h, w]).unwrap());
    let e = vit.forward(&mut tape, &base, &none, &bound).expect_err("a batch of no images");
    assert!(e.to_string().contains("at least one image"), "{e}");
    // Weights bound from another model, even one of the same architecture, are refused.
    let (_, twin) = demo_vit(&gpu);
    let mut tape = Tape::new(&gpu);
    let other = twin.bind(&mut tape, false);
    let x = tape.constant(&images);
    let e = vit.forward(&mut tape, &other, &x, &peft_wgpu::nn::NoHooks).expect_err("another model's weights");
    assert!(e.to_string().contains("another model"), "{e}");
}

#[test]
fn a_tape_recorded_before_an_optimizer_step_refuses_its_backward_pass() {
    use peft_wgpu::ops::linear::linear_var;
    let gpu = gpu();
    let w = Tensor::from_slice(&gpu, &[0.5, -1.0, 1.5, 0.25], &[2, 2]).unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0], &[1, 2]).unwrap();
    let record = |tape: &mut Tape| {
        let (p, xv) = (tape.param(&w), tape.constant(&x));
        let y = linear_var(tape, &xv, &p, None).unwrap();
        let y2 = mul_var(tape, &y, &y).unwrap();
        (p, sum_var(tape, &y2).unwrap())
    };
    let mut first = Tape::new(&gpu);
    let (p1, loss1) = record(&mut first);
    // A second tape records the same forward pass before the first one's step.
    let mut second = Tape::new(&gpu);
    let (_, loss2) = record(&mut second);
    let grads = first.backward(&loss1).unwrap();
    let mut opt = Optimizer::new(&gpu, OptimizerKind::sgd(), 0.1, std::slice::from_ref(&w)).unwrap();
    opt.step(&[grads.get(&p1)]).unwrap();
    let e = second.backward(&loss2).expect_err("w changed under the second tape");
    assert!(e.to_string().contains("changed in place"), "{e}");
    // Recorded after the step, the same pass runs.
    let mut third = Tape::new(&gpu);
    let (p3, loss3) = record(&mut third);
    assert!(third.backward(&loss3).unwrap().get(&p3).is_some());
    // An inference tape records no backward rules: its backward pass is refused by name.
    let mut frozen = Tape::inference(&gpu);
    let (_, value) = record(&mut frozen);
    let e = frozen.backward(&value).expect_err("an inference tape");
    assert!(e.to_string().contains("Tape::inference"), "{e}");
}

/// `step_vars` takes a gradient only from the leaf of the parameter at its place: another
/// optimizer's leaves of the same shapes, two swapped, or one too few are refused and
/// change nothing; the leaves in order update each parameter by its own gradient.
#[test]
fn a_step_takes_each_gradient_from_its_own_parameters_leaf() {
    let gpu = gpu();
    let tensor = |v: f32| Tensor::from_slice(&gpu, &[v, v], &[2]).unwrap();
    let (a, b, c) = (tensor(1.0), tensor(2.0), tensor(3.0));
    let mut tape = Tape::new(&gpu);
    let vars = [tape.param(&a), tape.param(&b), tape.param(&c)];
    // loss = Σ a² + Σ b³ + Σ c²: the gradients 2a and 3b² tell a and b apart.
    let square = |tape: &mut Tape, v: &peft_wgpu::Var| mul_var(tape, v, v).unwrap();
    let (a2, b2, c2) = (square(&mut tape, &vars[0]), square(&mut tape, &vars[1]), square(&mut tape, &vars[2]));
    let b3 = mul_var(&mut tape, &b2, &vars[1]).unwrap();
    let terms: Vec<peft_wgpu::Var> = [a2, b3, c2].iter().map(|t| sum_var(&mut tape, t).unwrap()).collect();
    let ab = add_var(&mut tape, &terms[0], &terms[1]).unwrap();
    let loss = add_var(&mut tape, &ab, &terms[2]).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let mut opt = Optimizer::new(&gpu, OptimizerKind::sgd(), 0.05, &[a.clone(), b.clone()]).unwrap();
    let refused = [
        (vec![&vars[1], &vars[0]], "is the leaf of parameter 1, not of parameter 0"),
        (vec![&vars[0], &vars[2]], "is no parameter's leaf"),
        (vec![&vars[0]], "1 variables for 2 parameters"),
    ];
    for (given, want) in refused {
        let e = opt.step_vars(&grads, given).expect_err(want).to_string();
        assert!(e.contains(want), "{e}");
    }
    assert_eq!(opt.steps(), 0);
    assert_eq!([gpu.read(&a).unwrap(), gpu.read(&b).unwrap()], [[1.0; 2], [2.0; 2]], "nothing updated");
    opt.step_vars(&grads, &vars[..2]).unwrap();
    // a − 0.05·2a = 0.9, b − 0.05·3b² = 1.4.
    let (new_a, new_b) = (gpu.read(&a).unwrap(), gpu.read(&b).unwrap());
    assert!(
        new_a.iter().all(|v| (v - 0.9).abs() < 1e-6) && new_b.iter().all(|v| (v - 1.4).abs() < 1e-6),
        "{new_a:?} {new_b:?}"
    );
}

/// Two optimizers stepping one tensor from two threads lose no update: each step's copy
/// in, update and copy out are recorded with no other step in between.
#[test]
fn steps_over_one_tensor_from_two_threads_all_count() {
    let gpu = gpu();
    let w = Tensor::zeros(&gpu, &[64]).unwrap();
    let steps = 150;
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut opt = Optimizer::new(&gpu, OptimizerKind::sgd(), 1.0, std::slice::from_ref(&w)).unwrap();
                let g = Tensor::full(&gpu, &[64], 1.0).unwrap();
                for _ in 0..steps {
                    opt.step(&[Some(&g)]).unwrap();
                }
            });
        }
    });
    let got = gpu.read(&w).unwrap();
    assert!(got.iter().all(|&v| v == -2.0 * steps as f32), "every step of both threads: {:?}", &got[..4]);
}

#[test]
fn a_checkpoint_is_restored_only_into_its_own_optimizer() {
    let gpu = gpu();
    let a = Tensor::from_slice(&gpu, &[1.0, 1.0], &[2]).unwrap();
    let b = Tensor::from_slice(&gpu, &[7.0, 7.0], &[2]).unwrap();
    let mut opt_a = Optimizer::new(&gpu, OptimizerKind::adamw(), 1e-3, std::slice::from_ref(&a)).unwrap();
    let mut opt_b = Optimizer::new(&gpu, OptimizerKind::adamw(), 1e-3, std::slice::from_ref(&b)).unwrap();
    let of_a = opt_a.checkpoint().unwrap();
    let e = opt_b.restore(&of_a).expect_err("a checkpoint of another optimizer");
    assert!(e.to_string().contains("another optimizer"), "{e}");
    assert_eq!(gpu.read(&b).unwrap(), [7.0, 7.0], "nothing written");
    opt_a.step(&[Some(&Tensor::full(&gpu, &[2], 1.0).unwrap())]).unwrap();
    opt_a.restore(&of_a).expect("its own checkpoint");
    assert_eq!(gpu.read(&a).unwrap(), [1.0, 1.0]);
}

#[test]
fn batches_list_rows_as_the_spec_says_and_refuse_a_batch_beyond_memory() {
    use peft_wgpu::train::{BatchOrder, Batches};
    let mut sequential = Batches::new(BatchOrder::Sequential, 3, 2);
    let steps: Vec<Vec<usize>> = (0..3).map(|_| sequential.next_rows().unwrap()).collect();
    assert_eq!(steps, [[0, 1], [2, 0], [1, 2]], "step t takes rows (t·B + j) mod N");
    let mut shuffled = Batches::new(BatchOrder::Shuffled { seed: 7 }, 5, 5);
    let mut epoch = shuffled.next_rows().unwrap();
    epoch.sort_unstable();
    assert_eq!(epoch, [0, 1, 2, 3, 4], "one shuffled epoch takes every row once");
    let e = Batches::new(BatchOrder::Sequential, 3, 1 << 60).next_rows().expect_err("2^60 row numbers");
    assert!(e.to_string().contains("1152921504606846976"), "{e}");
}

#[test]
fn sizes_and_settings_built_in_code_that_cannot_be_held_are_errors_not_panics() {
    use peft_wgpu::io::{Dataset, HostTensor};
    use peft_wgpu::train::{BatchOrder, Batches};
    let gpu = gpu();
    let base = peft_wgpu::demo::model::architecture();
    let too_big = [
        VitConfig { image_size: [1 << 33, 1 << 33], patch_size: [1, 1], ..base.clone() },
        VitConfig { num_hidden_layers: 1 << 40, ..base.clone() },
        VitConfig { num_labels: 1 << 40, ..base.clone() },
        VitConfig { hidden_size: 0, num_attention_heads: 0, ..base.clone() },
    ];
    for config in &too_big {
        let e = config.check().expect_err("out of bounds");
        assert!(e.to_string().contains("ViT config"), "{e}");
        assert!(VitWeights::random(config, 0).is_err(), "{config:?}");
        assert!(peft_wgpu::demo::model::init_weights(config, 0).is_err(), "{config:?}");
        let moppa = adapter_config(r#"{"peft_type": "MOPPA"}"#);
        assert!(peft_wgpu::adapters::Adapter::check(moppa, CONFIG_PATH.as_ref(), None, config).is_err());
    }
    // Shapes whose sizes overflow.
    assert!(HostTensor::new(vec![usize::MAX, 2], vec![]).is_err());
    assert!(HostTensor::zeros(&[usize::MAX, 2]).is_err());
    assert_eq!(peft_wgpu::ops::conv::Conv2dSpec::out_size(usize::MAX, 0, 1, 0), None);
    // Batch orders over more rows than memory can list.
    let e = Batches::new(BatchOrder::Shuffled { seed: 1 }, 1 << 60, 1).next_rows().expect_err("2^60 rows");
    assert!(e.to_string().contains("does not fit in memory"), "{e}");
    // Images without pixels, and a data set whose public shape was changed after it was made.
    let path = std::path::Path::new("memory");
    assert!(Dataset::from_parts(path, [1, 0, 8, 8], vec![], vec![0]).is_err());
    let mut data = Dataset::from_parts(path, [2, 1, 2, 2], vec![0.0; 8], vec![0, 1]).unwrap();
    data.shape = [4, 1, 1, 2];
    assert!(data.gather(&[1]).is_err(), "gathered by a shape its pixels and labels do not have");
    // An AdamW optimizer whose derived coefficient 1 − lr·weight_decay overflows f32 is
    // refused when made; one whose learning rate is raised to that later, by its step.
    let p = Tensor::from_slice(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e20 };
    let e = Optimizer::new(&gpu, kind, 1e20, std::slice::from_ref(&p)).expect_err("an overflowing decay");
    assert!(e.to_string().contains("beyond f32's range"), "{e}");
    let mut optimizer = Optimizer::new(&gpu, kind, 1e-30, std::slice::from_ref(&p)).unwrap();
    optimizer.set_lr(1e20).unwrap();
    let g = Tensor::from_slice(&gpu, &[0.0, 0.0], &[2]).unwrap();
    let e = optimizer.step(&[Some(&g)]).expect_err("an overflowing update");
    assert!(e.to_string().contains("beyond f32's range"), "{e}");
    assert_eq!(gpu.read(&p).unwrap(), [1.0, 2.0], "the parameters are untouched");
    // A FLoRA core with no modes (whose scale would apply to no product).
    let mut tape = Tape::new(&gpu);
    let core = tape.param(&Tensor::from_slice(&gpu, &[2.0], &[]).unwrap());
    assert!(peft_wgpu::adapters::flora::flora_delta_var(&mut tape, &core, &[], 3.0).is_err());
    // Weights that `load` would refuse are not saved.
    let mut weights = VitWeights::random(&base, 1).unwrap();
    weights.tensors.get_mut("classifier.bias").unwrap().data[0] = f32::NAN;
    let dir = std::env::temp_dir().join(format!("peft-wgpu-nan-save-{}", std::process::id()));
    let e = weights.save(&dir).expect_err("a NaN weight");
    assert!(e.to_string().contains("classifier.bias"), "{e}");
    assert!(!dir.exists(), "nothing written");
}

/// Options that name no backend the kernels are written for are refused by name, rather
/// than opening whatever adapter wgpu would fall back to.
#[test]
fn options_without_a_supported_backend_are_refused() {
    for backends in [wgpu::Backends::empty(), wgpu::Backends::GL, wgpu::Backends::BROWSER_WEBGPU] {
        let options = peft_wgpu::GpuOptions { backends, ..Default::default() };
        let Err(err) = Gpu::with_options(&options) else { panic!("{backends:?} opened a device") };
        assert!(err.to_string().contains("GpuOptions::backends"), "{backends:?}: {err}");
    }
}

/// A model without a classifier (`VitWeights::headless`, a backbone) classifies only with an
/// adapter that brings a head (a saved `classifier`, made new like the head of `num_labels`):
/// without one, its forward pass (which gave logits of 0 before), evaluating, training and
/// merging are refused.
#[test]
fn a_model_without_a_classifier_needs_an_adapter_with_its_own_head() {
    use peft_wgpu::adapters::Adapter;
    use peft_wgpu::io::Dataset;
    use peft_wgpu::train::{BatchOrder, TrainOptions, evaluate, train};
    let gpu = gpu();
    let config = peft_wgpu::demo::model::architecture();
    let weights = VitWeights { headless: true, ..VitWeights::random(&config, 1).unwrap() };
    let vit = Vit::from_weights(&gpu, &weights).unwrap();
    assert!(vit.headless());
    let path = std::path::Path::new(CONFIG_PATH);
    let n = 4;
    let [h, w] = config.image_size;
    let data =
        Dataset::from_parts(path, [n, config.num_channels, h, w], vec![0.1; n * h * w], vec![0, 1, 0, 1]).unwrap();
    let build = |json: &str| Adapter::new(&gpu, adapter_config(json), path, &vit, 1).unwrap();
    let options = TrainOptions {
        steps: 1,
        batch_size: 2,
        lr: 0.1,
        optimizer: OptimizerKind::Sgd { weight_decay: None },
        order: BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    };
    let headless = |e: peft_wgpu::Error| assert!(e.to_string().contains("has no classifier"), "{e}");
    headless(evaluate(&gpu, &vit, None, &data, 2).expect_err("no head at all"));
    let none = build(r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#);
    assert!(!none.has_own_head());
    let forward = |adapter: Option<&Adapter>| {
        let mut tape = Tape::new(&gpu);
        let base = vit.bind(&mut tape, false);
        let images = tape.constant(&Tensor::from_slice(&gpu, &vec![0.1; h * w], &[1, config.num_channels, h, w])?);
        match adapter {
            Some(a) => {
                let bound = a.bind(&mut tape);
                vit.forward(&mut tape, &base, &images, &bound).map(|logits| logits.shape().to_vec())
            }
            None => vit.forward(&mut tape, &base, &images, &peft_wgpu::nn::NoHooks).map(|l| l.shape().to_vec()),
        }
    };
    headless(forward(None).expect_err("no head at all"));
    headless(forward(Some(&none)).expect_err("no head"));
    headless(evaluate(&gpu, &vit, Some(&none), &data, 2).expect_err("no head"));
    headless(train(&gpu, &vit, &none, &data, &options, &mut |_| {}).expect_err("no head"));
    headless(none.merge(&gpu, &weights).expect_err("no head"));
    for json in [
        r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "modules_to_save": ["classifier"]}"#,
        r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "num_labels": 3}"#,
    ] {
        let a = build(json);
        assert!(a.has_own_head(), "{json}");
        assert_eq!(forward(Some(&a)).expect("its head classifies")[0], 1, "{json}");
        train(&gpu, &vit, &a, &data, &options, &mut |_| {}).expect("a new head trains");
        let report = evaluate(&gpu, &vit, Some(&a), &data, 2).expect("and classifies");
        assert!(report.mean_loss.is_finite());
        assert!(!a.merge(&gpu, &weights).expect("merged with its head").headless);
    }
}

/// A pass bound to a part of a step's batch must compute that many images: LoRA's dropout
/// masks are drawn for those images of the batch, so any other count (an empty or reversed
/// range included) would draw another batch's masks.
#[test]
fn a_part_of_a_batch_is_the_images_the_pass_computes() {
    use peft_wgpu::adapters::Adapter;
    let gpu = gpu();
    let (config, vit) = demo_vit(&gpu);
    let lora = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "lora_dropout": 0.5}"#;
    let adapter = Adapter::new(&gpu, adapter_config(lora), std::path::Path::new(CONFIG_PATH), &vit, 1).unwrap();
    let [c, h, w] = [config.num_channels, config.image_size[0], config.image_size[1]];
    let images = Tensor::from_slice(&gpu, &vec![0.1; 2 * c * h * w], &[2, c, h, w]).unwrap();
    #[expect(clippy::reversed_empty_ranges, reason = "a reversed range is the misuse tested")]
    let parts = [2..4, 0..2, 2..5, 3..3, 5..2];
    for part in parts {
        let mut tape = Tape::new(&gpu);
        let base = vit.bind(&mut tape, false);
        let x = tape.constant(&images);
        let bound = adapter.bind_train_part(&mut tape, 3, part.clone());
        match vit.forward(&mut tape, &base, &x, &bound) {
            Ok(_) => assert_eq!(part.len(), 2, "{part:?} accepted"),
            Err(e) => {
                assert_ne!(part.len(), 2, "{part:?}: {e}");
                assert!(e.to_string().contains("bind_train_part") && e.to_string().contains("computes 2"), "{e}");
            }
        }
    }
}
