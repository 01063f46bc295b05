//! Every adapter's forward and the gradients of all its tensors against PyTorch fixtures
//! (`scripts/fixtures_adapters.py`): FLoRA, MoPPA and RLP from the torch reference, LoRA from
//! PEFT itself under both module namings.

mod common;

use std::path::Path;

use common::{assert_close, fixture, gpu};
use peft_wgpu::adapters::Adapter;
use peft_wgpu::nn::Vit;
use peft_wgpu::ops::elementwise::add_var;
use peft_wgpu::ops::loss::cross_entropy_var;
use peft_wgpu::{Tape, Tensor};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn check(name: &str, label_mod: Option<u32>) {
    check_on("vit_tiny", "adapters", name, label_mod);
}

/// Checks adapter `folder/name` on model `model` against `<folder>_expected.safetensors`.
fn check_on(model: &str, folder: &str, name: &str, label_mod: Option<u32>) {
    let gpu = gpu();
    let f = fixture(&format!("{folder}_expected.safetensors"));
    let vit = Vit::load(&gpu, &fixtures().join(model)).expect("model");
    let adapter = Adapter::load(&gpu, &fixtures().join(folder).join(name), &vit).expect("adapter loads");
    let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).expect("pixels");
    let labels: Vec<u32> = f.ints("labels").iter().map(|&l| l as u32 % label_mod.unwrap_or(u32::MAX)).collect();
    let labels = Tensor::from_u32(&gpu, &labels, &[labels.len()]).expect("labels");
    let mut tape = Tape::new(&gpu);
    let base = vit.bind(&mut tape, false);
    let bound = adapter.bind(&mut tape);
    let images = tape.constant(&pixels);
    let logits = vit.forward(&mut tape, &base, &images, &bound).expect("forward");
    let mut loss = cross_entropy_var(&mut tape, &logits, &labels).expect("loss");
    // Step 0 of a run: MoPPA's route term at its full weight.
    if let Some(term) = bound.regularizer(&mut tape, 0, 100).expect("regularizer") {
        loss = add_var(&mut tape, &loss, &term).expect("add");
    }
    assert_close(
        &format!("{name} logits"),
        &gpu.read(logits.value()).unwrap(),
        &f.f64(&format!("{name}.logits")),
        1e-5,
        1e-6,
    );
    assert_close(
        &format!("{name} loss"),
        &gpu.read(loss.value()).unwrap(),
        &f.f64(&format!("{name}.loss")),
        1e-5,
        1e-6,
    );
    let vars = bound.vars().to_vec();
    drop(bound);
    let grads = tape.backward(&loss).expect("backward");
    let mut checked = 0;
    for (param, var) in adapter.trainable().iter().zip(&vars) {
        let key = format!("{name}.grad.{}", param.key);
        let want = f.f64(&key);
        let got = gpu.read(grads.get(var).unwrap_or_else(|| panic!("no gradient for {}", param.key))).unwrap();
        // 2e-5 of the largest gradient: the worst seen is 7e-6 (MoPPA's K, summed over the
        // grid, batch and layers); the adapters issue's contract is 1e-4.
        assert_close(&key, &got, &want, 2e-5, 1e-7);
        checked += 1;
    }
    let expected = f.keys().iter().filter(|k| k.starts_with(&format!("{name}.grad."))).count();
    assert_eq!(checked, expected, "{name}: the adapter has {checked} trainable tensors, the fixture {expected}");
    // PEFT's parameter counts of the folder, where the fixture has them.
    if f.keys().iter().any(|k| *k == format!("{name}.counts")) {
        let counts = f.ints(&format!("{name}.counts"));
        let summary = adapter.trainable_summary();
        let number = |n: i64| {
            let s = n.to_string();
            let digits: Vec<char> = s.chars().collect();
            let mut out = String::new();
            for (i, c) in digits.iter().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(*c);
            }
            out
        };
        let want = format!("trainable params: {} || all params: {}", number(counts[0]), number(counts[1]));
        assert!(summary.starts_with(&want), "{name}: {summary}, PEFT: {want}");
    }
}

#[test]
fn flora_matches_torch() {
    check("flora", None);
}

#[test]
fn moppa_matches_torch() {
    check("moppa", None);
}

/// `layers: [1]`: the file holds per-layer tensors for layer 1 only, keyed by its id, and
/// layer 0 runs unfiltered; a lookup by position in `layers` would filter layer 0 instead.
#[test]
fn moppa_on_layer_1_only_matches_torch() {
    check("moppa_layer1", None);
}

/// `num_heads: 4` on a model of 2 attention heads: K is `[4, 4, 4]`, T has `d = 4` values,
/// the router `[3, 4]`; with `entropy_scale` 0.4, so the route term's gradients are checked.
#[test]
fn moppa_with_more_router_heads_than_attention_heads_matches_torch() {
    check("moppa_heads4", None);
}

/// `num_heads: 1` (one head of all 16 channels) with `layers: [1, 0]`: each layer's tensors
/// belong to the layer their key names, not to the position the layer has in the list.
#[test]
fn moppa_with_one_router_head_on_layers_listed_out_of_order_matches_torch() {
    check("moppa_heads1_layers10", None);
}

/// On 9×14 images of 2×4 patches the grid is 4×3: MoPPA's K is `[4, 3, heads]`.
#[test]
fn moppa_on_an_oblong_grid_matches_torch() {
    check_on("vit_wide", "wide", "moppa", None);
}

/// FLoRA's four conv modes on the 2×4 patch kernel (kh ≠ kw) and a linear layer.
#[test]
fn flora_on_an_oblong_patch_conv_matches_torch() {
    check_on("vit_wide", "wide", "flora", None);
}

/// PEFT's LoRA conv on the 2×4 patch kernel.
#[test]
fn lora_on_an_oblong_patch_conv_matches_peft() {
    check_on("vit_wide", "wide", "lora", None);
}

/// PEFT under transformers 5 with `exclude_modules: ["output.dense"]` excludes nothing (no
/// module has that name there) and saves every module: all of them load here too.
#[test]
fn lora_written_by_peft_with_an_exclusion_of_the_other_naming_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_exclude", None);
}

/// `target_modules: "all-linear"` as PEFT expands it for a ViT classifier.
#[test]
fn lora_written_by_peft_for_all_linear_layers_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_all_linear", None);
}

/// PEFT's `save_embedding_layers` stores the patch embedding (the input embedding) beside the
/// LoRA tensors; PEFT loads it over the base's, and so does this crate (frozen).
#[test]
fn lora_written_by_peft_with_its_embedding_layer_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_embedding", None);
}

/// `modules_to_save: ["classifier", "output"]` written by PEFT under transformers 5, where no
/// module is named `output`: the file's naming decides, so o_proj (inside transformers 4's
/// `attention.output`) and fc1 carry LoRA as PEFT put it there, and only the classifier is
/// saved.
#[test]
fn lora_written_by_peft_with_an_entry_of_the_other_naming_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_output_entry", None);
}

/// `bias: "all"` written by PEFT: every bias of the model trains (LayerNorms', the patch
/// embedding's, the final norm's), a LoRA module's keyed `<m>.base_layer.bias`; the saved
/// classifier's bias trains with it, and the two further copies PEFT stores are not read.
#[test]
fn lora_written_by_peft_with_all_biases_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_bias_all", None);
}

/// `bias: "lora_only"` written by PEFT: the biases of the LoRA modules train.
#[test]
fn lora_written_by_peft_with_its_modules_biases_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_bias_lora_only", None);
}

/// `bias: "all"` with a saved container (`layers.1.mlp`): the container's biases train with
/// it, and the copies PEFT stores under its wrapper (`mlp.modules_to_save.default.fc1.bias`,
/// `mlp.original_module.fc1.bias`) are not read.
#[test]
fn lora_written_by_peft_with_all_biases_and_a_saved_container_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_bias_all_container", None);
}

/// `bias: "all"` with the patch embedding PEFT stores by `save_embedding_layers`: its weight
/// loads frozen, its bias trains as every other bias.
#[test]
fn lora_written_by_peft_with_all_biases_and_its_embedding_layer_matches_peft() {
    check_on("vit_tiny", "peft_extra", "lora_bias_all_embedding", None);
}

/// PEFT before 0.18 wrote no `base_layer.bias` for `bias: "lora_only"` and loads such a file
/// with the base model's biases: so does this crate, training them from there.
#[test]
fn lora_only_biases_a_file_lacks_start_from_the_base_model() {
    use peft_wgpu::adapters::{CONFIG_FILE, WEIGHTS_FILE};
    use peft_wgpu::io::safetensors::{self as st, HostTensor};
    let gpu = gpu();
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let src = fixtures().join("peft_extra/lora_bias_lora_only");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("adapters").join("lora_only_without_biases");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = peft_wgpu::io::TensorFile::open(&src.join(WEIGHTS_FILE)).unwrap();
    let kept: Vec<(String, HostTensor)> =
        file.keys().filter(|k| !k.ends_with(".bias")).map(|k| (k.to_string(), file.f32(k).unwrap())).collect();
    let list: Vec<(String, &HostTensor)> = kept.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&dir.join(WEIGHTS_FILE), &list, None).unwrap();
    std::fs::copy(src.join(CONFIG_FILE), dir.join(CONFIG_FILE)).unwrap();
    let without = Adapter::load(&gpu, &dir, &vit).expect("loads with the base biases");
    let biases: Vec<&str> =
        without.trainable().iter().map(|p| p.key.as_str()).filter(|k| k.ends_with("base_layer.bias")).collect();
    assert!(!biases.is_empty(), "the biases still train");
    let config = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap().replace("\"lora_only\"", "\"none\"");
    std::fs::write(dir.join(CONFIG_FILE), config).unwrap();
    let plain = Adapter::load(&gpu, &dir, &vit).expect("the same tensors without biases");
    let images = support_pixels(&gpu);
    assert_eq!(logits_of(&gpu, &vit, &without, &images), logits_of(&gpu, &vit, &plain, &images));
}

fn support_pixels(gpu: &peft_wgpu::Gpu) -> Tensor {
    let f = fixture("peft_extra_expected.safetensors");
    Tensor::from_slice(gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).expect("pixels")
}

fn logits_of(gpu: &peft_wgpu::Gpu, vit: &Vit, adapter: &Adapter, images: &Tensor) -> Vec<f32> {
    let mut tape = Tape::new(gpu);
    let base = vit.bind(&mut tape, false);
    let bound = adapter.bind(&mut tape);
    let images = tape.constant(images);
    let logits = vit.forward(&mut tape, &base, &images, &bound).expect("forward");
    gpu.read(logits.value()).unwrap()
}

/// A hand-written `"all-linear"` adapts the modules PEFT's expansion lists.
#[test]
fn all_linear_adapts_what_peft_adapts() {
    use peft_wgpu::adapters::AdapterConfig;
    use peft_wgpu::io::json::JsonFile;
    let gpu = gpu();
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let path = fixtures().join("peft_extra/lora_all_linear/adapter_config.json");
    let text = br#"{"peft_type": "LORA", "r": 2, "target_modules": "all-linear"}"#;
    let config = AdapterConfig::from_json(&JsonFile::parse(&path, text).unwrap()).unwrap();
    let ours = Adapter::new(&gpu, config, &path, &vit, 1).unwrap();
    let peft = Adapter::load(&gpu, &fixtures().join("peft_extra/lora_all_linear"), &vit).unwrap();
    let keys = |a: &Adapter| a.trainable().iter().map(|p| p.key.clone()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(keys(&ours), keys(&peft));
    // PEFT compares the value lower-cased.
    let text = br#"{"peft_type": "LORA", "r": 2, "target_modules": "All-Linear"}"#;
    let config = AdapterConfig::from_json(&JsonFile::parse(&path, text).unwrap()).unwrap();
    assert_eq!(keys(&Adapter::new(&gpu, config, &path, &vit, 1).unwrap()), keys(&peft), "All-Linear");
}

#[test]
fn rlp_matches_torch() {
    check("rlp", Some(3));
}

/// An RLP adapter file in merged form, `prompt_embeddings` alone (SPEC §9), gives the
/// unmerged adapter's logits; it saves as `P₀ = P`, `B = 0` and a nonzero `A` (without which
/// `B` would get no gradient), and a file holding both forms is refused by name.
#[test]
fn rlp_in_merged_form_matches_torch_and_saves_unmerged() {
    use peft_wgpu::io::TensorFile;
    use peft_wgpu::io::safetensors::{HostTensor, serialize};
    let gpu = gpu();
    let f = fixture("adapters_expected.safetensors");
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let source = fixtures().join("adapters/rlp");
    let unmerged = TensorFile::open(&source.join("adapter_model.safetensors")).expect("fixture");
    let prompts = HostTensor {
        shape: f.shape("rlp.prompt_embeddings"),
        data: f.f64("rlp.prompt_embeddings").iter().map(|&v| v as f32).collect(),
    };
    let write = |dir: &Path, with: &[&str]| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(source.join("adapter_config.json"), dir.join("adapter_config.json")).unwrap();
        let mut tensors: Vec<(String, HostTensor)> = unmerged
            .keys()
            .filter(|k| !k.starts_with("rlp.") || with.contains(k))
            .map(|k| (k.to_string(), unmerged.f32(k).unwrap()))
            .collect();
        tensors.push(("prompt_embeddings".into(), prompts.clone()));
        let refs: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
        let path = dir.join("adapter_model.safetensors");
        std::fs::write(&path, serialize(&path, &refs, None).unwrap()).unwrap();
    };
    let dir = std::env::temp_dir().join(format!("peft-wgpu-rlp-merged-form-{}", std::process::id()));
    write(&dir.join("merged"), &[]);
    let adapter = Adapter::load(&gpu, &dir.join("merged"), &vit).expect("merged form loads");
    let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).unwrap();
    let mut tape = Tape::inference(&gpu);
    let base = vit.bind(&mut tape, false);
    let bound = adapter.bind(&mut tape);
    let images = tape.constant(&pixels);
    let logits = vit.forward(&mut tape, &base, &images, &bound).expect("forward");
    assert_close("merged-form rlp logits", &gpu.read(logits.value()).unwrap(), &f.f64("rlp.logits"), 1e-5, 1e-6);
    drop(bound);

    adapter.save(&gpu, &dir.join("saved")).expect("save");
    let saved = TensorFile::open(&dir.join("saved/adapter_model.safetensors")).unwrap();
    assert!(!saved.contains("prompt_embeddings"), "saved in unmerged form");
    assert_eq!(saved.f32("rlp.prompt_init").unwrap(), prompts);
    assert!(saved.f32("rlp.B").unwrap().data.iter().all(|&v| v == 0.0));
    let a = saved.f32("rlp.A").unwrap();
    assert!(a.shape == [3, 2] && a.data.iter().all(|v| v.is_finite()) && a.data.iter().any(|&v| v != 0.0), "{a:?}");

    write(&dir.join("both"), &["rlp.A"]);
    let e = Adapter::load(&gpu, &dir.join("both"), &vit).expect_err("both forms refused");
    assert!(e.to_string().contains("`prompt_embeddings`") && e.to_string().contains("`rlp.A`"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lora_written_by_peft_under_transformers_5_matches_peft() {
    check("lora_v5", None);
}

/// `modules_to_save: ["classifier", "mlp", "vit.embeddings"]`: modules that hold others are
/// saved whole, as PEFT saves them (fc1 and fc2 of every layer; the CLS token, the position
/// embeddings and the patch embedding), and PEFT adapts no module inside them (fc1 is a
/// target but saved).
#[test]
fn lora_written_by_peft_with_saved_containers_matches_peft() {
    check("lora_saved_containers", None);
}

#[test]
fn lora_written_by_peft_under_transformers_4_matches_peft() {
    check("lora_v4", None);
}

/// `lora_dropout` acts on the LoRA branch while training only, with masks fixed by the seed.
#[test]
fn lora_dropout_applies_only_while_training() {
    use peft_wgpu::adapters::AdapterConfig;
    use peft_wgpu::io::json::JsonFile;
    let gpu = gpu();
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let dir = fixtures().join("adapters/lora_v5");
    let mut raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    raw["lora_dropout"] = serde_json::json!(0.5);
    let path = dir.join("adapter_config.json");
    let config = AdapterConfig::from_json(&JsonFile::parse(&path, raw.to_string().as_bytes()).unwrap()).unwrap();
    let adapter = Adapter::load_tensors(&gpu, config, &path, &dir.join("adapter_model.safetensors"), &vit).unwrap();
    let f = fixture("adapters_expected.safetensors");
    let pixels = Tensor::from_slice(&gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).unwrap();
    let logits = |seed: Option<u64>| {
        let mut tape = Tape::inference(&gpu);
        let base = vit.bind(&mut tape, false);
        let bound = match seed {
            Some(s) => adapter.bind_train(&mut tape, s),
            None => adapter.bind(&mut tape),
        };
        let images = tape.constant(&pixels);
        gpu.read(vit.forward(&mut tape, &base, &images, &bound).unwrap().value()).unwrap()
    };
    let eval = logits(None);
    assert_close("eval ignores dropout", &eval, &f.f64("lora_v5.logits"), 1e-5, 1e-6);
    let (a, b, c) = (logits(Some(1)), logits(Some(1)), logits(Some(2)));
    assert_eq!(a, b, "the same seed gives the same masks");
    assert_ne!(a, c, "another seed gives other masks");
    assert_ne!(a, eval, "training applies dropout");

    // `lora_dropout: 1.0` (PEFT accepts it; `nn.Dropout(1.0)` zeroes its input) removes the
    // branch while training, whatever the seed, and changes nothing in evaluation.
    raw["lora_dropout"] = serde_json::json!(1.0);
    let config = AdapterConfig::from_json(&JsonFile::parse(&path, raw.to_string().as_bytes()).unwrap()).unwrap();
    let all_dropped = Adapter::load_tensors(&gpu, config, &path, &dir.join("adapter_model.safetensors"), &vit).unwrap();
    let run = |adapter: Option<&Adapter>, seed: u64| {
        let mut tape = Tape::inference(&gpu);
        let base = vit.bind(&mut tape, false);
        let images = tape.constant(&pixels);
        let out = match adapter {
            Some(adapter) => {
                let bound = adapter.bind_train(&mut tape, seed);
                vit.forward(&mut tape, &base, &images, &bound)
            }
            None => vit.forward(&mut tape, &base, &images, &peft_wgpu::nn::NoHooks),
        };
        gpu.read(out.unwrap().value()).unwrap()
    };
    // The same adapter with every lora_B zero (its branch adds exact zeros too) and no
    // dropout: what is left is the base model with the saved classifier.
    use peft_wgpu::io::safetensors::{self as st, HostTensor, TensorFile};
    let file = TensorFile::open(&dir.join("adapter_model.safetensors")).unwrap();
    let zeroed: Vec<(String, HostTensor)> = file
        .keys()
        .map(|k| {
            let t = file.f32(k).unwrap();
            if k.ends_with("lora_B.weight") {
                (k.to_string(), HostTensor::zeros(&t.shape).unwrap())
            } else {
                (k.to_string(), t)
            }
        })
        .collect();
    let zeroed_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lora_v5_b_zero.safetensors");
    st::write(&zeroed_path, &zeroed.iter().map(|(k, t)| (k.clone(), t)).collect::<Vec<_>>(), None).unwrap();
    raw["lora_dropout"] = serde_json::json!(0.0);
    let config = AdapterConfig::from_json(&JsonFile::parse(&path, raw.to_string().as_bytes()).unwrap()).unwrap();
    let branchless = Adapter::load_tensors(&gpu, config, &path, &zeroed_path, &vit).unwrap();
    let plain = run(Some(&branchless), 0);
    assert_ne!(plain, run(None, 0), "the saved classifier is in use");
    assert_eq!(run(Some(&all_dropped), 1), plain, "p = 1 while training: no branch");
    assert_eq!(run(Some(&all_dropped), 2), plain, "p = 1 while training, another seed");
    let mut tape = Tape::inference(&gpu);
    let base = vit.bind(&mut tape, false);
    let bound = all_dropped.bind(&mut tape);
    let images = tape.constant(&pixels);
    let eval_all_dropped = gpu.read(vit.forward(&mut tape, &base, &images, &bound).unwrap().value()).unwrap();
    assert_eq!(eval_all_dropped, eval, "p = 1 in evaluation: the adapter's logits");
}

/// While training, one LoRA module computes exactly `x Wᵀ + b + s·(dropout(x) Aᵀ) Bᵀ`, the
/// mask being the dropout twin's for the module's seed, over the branch's input only, scaled
/// by `1/(1 − p)`. The module is the classifier of a model whose head is the identity, so the
/// base model's logits are the classifier's input `x`.
#[test]
fn lora_dropout_masks_the_branch_input_as_the_twin_does() {
    use peft_wgpu::adapters::AdapterConfig;
    use peft_wgpu::io::HostTensor;
    use peft_wgpu::io::json::JsonFile;
    use peft_wgpu::nn::{NoHooks, VitConfig, VitWeights};
    use peft_wgpu::reference::dropout::dropout;
    let gpu = gpu();
    // The demo's architecture with as many labels as channels, for an identity head.
    let demo = peft_wgpu::demo::model::architecture();
    let d = demo.hidden_size;
    let config = VitConfig { num_labels: d, id2label: Vec::new(), ..demo };
    let mut weights = VitWeights::random(&config, 3).unwrap();
    let identity: Vec<f32> = (0..d * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
    weights.tensors.insert("classifier.weight".into(), HostTensor::new(vec![d, d], identity).unwrap());
    weights.tensors.insert("classifier.bias".into(), HostTensor::zeros(&[d]).unwrap());
    let vit = Vit::from_weights(&gpu, &weights).unwrap();
    let (p, r, alpha) = (0.5, 4, 8.0);
    let json = format!(
        r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": {alpha}, "target_modules": ["classifier"],
            "lora_dropout": {p}, "init_lora_weights": false}}"#
    );
    let path = Path::new("adapter_config.json");
    let adapter_config = AdapterConfig::from_json(&JsonFile::parse(path, json.as_bytes()).unwrap()).unwrap();
    let adapter = Adapter::new(&gpu, adapter_config, path, &vit, 5).unwrap();
    let factor = |name: &str| {
        let param = adapter.trainable().iter().find(|t| t.key.contains(name)).expect("a LoRA factor");
        common::f64s(&gpu.read(&param.tensor).unwrap())
    };
    let (a, b) = (factor("lora_A"), factor("lora_B"));
    let batch = 5;
    let ([h, w], c) = (config.image_size, config.num_channels);
    let images = common::Rng::new(4).normal_vec(batch * c * h * w, 0.0, 1.0);
    let images = Tensor::from_slice(&gpu, &images, &[batch, c, h, w]).unwrap();
    let logits = |seed: Option<u64>| {
        let mut tape = Tape::inference(&gpu);
        let base = vit.bind(&mut tape, false);
        let x = tape.constant(&images);
        let (out, module_seed) = match seed {
            None => (vit.forward(&mut tape, &base, &x, &NoHooks).unwrap(), None),
            Some(s) => {
                let bound = adapter.bind_train(&mut tape, s);
                (vit.forward(&mut tape, &base, &x, &bound).unwrap(), bound.dropout_seed(0))
            }
        };
        (common::f64s(&gpu.read(out.value()).unwrap()), module_seed)
    };
    let (x, _) = logits(None);
    let scale = alpha / r as f64;
    let mut seeds = Vec::new();
    for seed in [1, 2] {
        let (got, module_seed) = logits(Some(seed));
        let module_seed = module_seed.expect("a training binding has dropout seeds");
        seeds.push(module_seed);
        let dropped = dropout(&x, p, module_seed, 0);
        assert!(dropped.contains(&0.0) && dropped.iter().any(|&v| v != 0.0), "a mask that drops some inputs");
        let mut want = x.clone();
        for (row, out) in dropped.chunks(d).zip(want.chunks_mut(d)) {
            let h: Vec<f64> = (0..r).map(|k| (0..d).map(|i| row[i] * a[k * d + i]).sum()).collect();
            for (o, slot) in out.iter_mut().enumerate() {
                *slot += scale * (0..r).map(|k| h[k] * b[o * r + k]).sum::<f64>();
            }
        }
        let got: Vec<f32> = got.iter().map(|&v| v as f32).collect();
        assert_close(&format!("training logits, seed {seed}"), &got, &want, 1e-5, 1e-6);
    }
    assert_ne!(seeds[0], seeds[1], "each run seed gives the module another mask");
    let mut tape = Tape::inference(&gpu);
    assert_eq!(adapter.bind(&mut tape).dropout_seed(0), None, "no dropout outside training");
}
