//! `Adapter::merge`: a ViT built from the merged weights gives the adapter's logits (to 1e-5
//! of the largest), for LoRA (linear and the patch-embedding conv), FLoRA (linear and conv),
//! RLP (merged `prompt_embeddings`) and saved modules (a new head included); the merged
//! folder reloads to the same model; MoPPA refuses to merge.

mod common;
#[path = "support/adapters.rs"]
mod support;

use std::path::{Path, PathBuf};

use common::{assert_close, f64s, gpu};
use peft_wgpu::adapters::Adapter;
use peft_wgpu::nn::weights::PROMPT_KEY;
use peft_wgpu::nn::{Vit, VitWeights};
use peft_wgpu::{Gpu, cli};
use serde_json::json;
use support::{fixtures, logits, perturbed, pixels, pixels_sized};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("merge").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Merges `adapter` into the tiny ViT, checks the logits, saves the merged model, reloads it
/// and checks it is the same model. Returns the merged weights.
fn check(gpu: &Gpu, name: &str, adapter: &Adapter) -> VitWeights {
    check_on(gpu, "vit_tiny", name, adapter)
}

/// [`check`] on the fixture model `model`.
fn check_on(gpu: &Gpu, model: &str, name: &str, adapter: &Adapter) -> VitWeights {
    let base = VitWeights::load(&fixtures().join(model)).unwrap();
    let vit = Vit::from_weights(gpu, &base).unwrap();
    let x = pixels_sized(4, base.config.image_size);
    let want = logits(gpu, &vit, Some(adapter), &x);
    let merged = adapter.merge(gpu, &base).unwrap_or_else(|e| panic!("{name}: merge failed: {e}"));
    assert_eq!(merged.config.num_labels, adapter.num_labels(), "{name}: labels of the merged model");
    let merged_vit = Vit::from_weights(gpu, &merged).unwrap();
    let got = logits(gpu, &merged_vit, None, &x);
    assert_eq!(got.len(), 4 * adapter.num_labels(), "{name}: one logit per label and image");
    assert_close(&format!("{name}: merged vs adapter logits"), &got, &f64s(&want), 1e-5, 0.0);
    // The adapter moves the logits far more than the tolerance, so an unmerged model fails.
    let plain = logits(gpu, &vit, None, &x);
    let moved = want.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(moved > 1e-2 * largest, "{name}: the adapter barely changes the logits ({moved} of {largest})");

    let dir = scratch(name);
    merged.save(&dir).unwrap();
    let reloaded = VitWeights::load(&dir).unwrap();
    assert_eq!(reloaded.tensors, merged.tensors, "{name}: weights after save and load");
    assert_eq!(reloaded.prompts, merged.prompts, "{name}: prompts after save and load");
    // A merged head of another label count has no names; the saved config gets transformers'
    // defaults (LABEL_i), one per label.
    assert_eq!(reloaded.config.id2label.len(), merged.config.num_labels, "{name}: label names");
    let unnamed = |c: &peft_wgpu::nn::VitConfig| peft_wgpu::nn::VitConfig { id2label: Vec::new(), ..c.clone() };
    assert_eq!(unnamed(&reloaded.config), unnamed(&merged.config), "{name}: config after save and load");
    assert_eq!(logits(gpu, &Vit::load(gpu, &dir).unwrap(), None, &x), got, "{name}: logits of the reloaded model");
    merged
}

fn fixture_adapter(gpu: &Gpu, name: &str) -> Adapter {
    Adapter::load(gpu, &fixtures().join("adapters").join(name), &support::tiny_vit(gpu)).unwrap()
}

#[test]
fn lora_written_by_peft_merges() {
    let gpu = gpu();
    for name in ["lora_v4", "lora_v5"] {
        let merged = check(&gpu, name, &fixture_adapter(&gpu, name));
        // Modules the adapter does not touch keep their weights bit for bit.
        let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
        let key = "vit.encoder.layer.1.attention.attention.key.weight";
        assert_eq!(merged.tensors[key], base.tensors[key], "{name}: {key}");
    }
}

/// Saved modules that hold others (`mlp`, `vit.embeddings`): their tensors, the CLS token and
/// position embeddings among them, go into the merged model.
#[test]
fn lora_with_saved_containers_merges() {
    let gpu = gpu();
    let name = "lora_saved_containers";
    let merged = check(&gpu, name, &fixture_adapter(&gpu, name));
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    for key in
        ["vit.embeddings.cls_token", "vit.embeddings.position_embeddings", "vit.encoder.layer.1.output.dense.weight"]
    {
        assert_ne!(merged.tensors[key], base.tensors[key], "{key} comes from the adapter file");
    }
}

/// The biases a LoRA adapter trains (PEFT's `bias` "all" and "lora_only") replace the base
/// model's in the merged model: LayerNorms', the patch embedding's and the adapted modules'.
#[test]
fn lora_with_trained_biases_merges() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    let key_bias = "vit.encoder.layer.1.attention.attention.key.bias";
    let query_bias = "vit.encoder.layer.1.attention.attention.query.bias";
    let cases: [(&str, &[&str], &[&str]); 2] = [
        ("lora_bias_all", &["vit.layernorm.bias", "vit.encoder.layer.0.output.dense.bias", key_bias, query_bias], &[]),
        ("lora_bias_lora_only", &["vit.embeddings.patch_embeddings.projection.bias", query_bias], &[key_bias]),
    ];
    for (name, changed, kept) in cases {
        let adapter = Adapter::load(&gpu, &fixtures().join("peft_extra").join(name), &vit).unwrap();
        let merged = check(&gpu, name, &adapter);
        for key in changed {
            assert_ne!(merged.tensors[*key], base.tensors[*key], "{name}: {key} comes from the adapter file");
        }
        for key in kept {
            assert_eq!(merged.tensors[*key], base.tensors[*key], "{name}: {key} is not trained");
        }
    }
}

/// The patch embedding PEFT stored with `save_embedding_layers` goes into the merged model.
#[test]
fn lora_with_a_stored_embedding_layer_merges() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let adapter = Adapter::load(&gpu, &fixtures().join("peft_extra/lora_embedding"), &vit).unwrap();
    assert_eq!(adapter.trainable().len(), 4, "the embedding is stored, not trained");
    let merged = check(&gpu, "lora_embedding", &adapter);
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    let key = "vit.embeddings.patch_embeddings.projection.weight";
    assert_ne!(merged.tensors[key], base.tensors[key], "{key} comes from the adapter file");
    // Saved again, the adapter keeps the embedding and does not list it as a saved module.
    let dir = scratch("lora_embedding_resaved");
    adapter.save(&gpu, &dir).unwrap();
    let file = peft_wgpu::io::TensorFile::open(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(file.contains(&format!("base_model.model.{key}")));
    let config = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    assert!(!config.contains("projection"), "{config}");
    let again = Adapter::load(&gpu, &dir, &vit).unwrap();
    let x = pixels(2);
    assert_eq!(logits(&gpu, &vit, Some(&again), &x), logits(&gpu, &vit, Some(&adapter), &x));
}

#[test]
fn lora_on_linear_layers_and_the_patch_embedding_merges() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 4, "lora_alpha": 6, "use_rslora": true,
                     "target_modules": ["query", "value", "output.dense", "projection"],
                     "rank_pattern": {"value": 2}, "alpha_pattern": {"projection": 3},
                     "modules_to_save": ["classifier", "layernorm"]});
    let adapter = perturbed(&gpu, &vit, &cfg, 7, 0.3, &scratch("lora_conv_adapter"));
    let merged = check(&gpu, "lora_conv", &adapter);
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    for key in ["vit.embeddings.patch_embeddings.projection.weight", "vit.layernorm.weight", "classifier.bias"] {
        assert_ne!(merged.tensors[key], base.tensors[key], "{key} is merged");
    }
}

#[test]
fn lora_with_a_new_head_merges_into_a_model_with_its_label_count() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["key", "projection"], "num_labels": 7});
    let adapter = perturbed(&gpu, &vit, &cfg, 8, 0.3, &scratch("new_head_adapter"));
    let merged = check(&gpu, "lora_new_head", &adapter);
    assert_eq!(merged.tensors["classifier.weight"].shape, [7, 16]);
    assert_eq!(merged.config.num_labels, 7);
}

#[test]
fn flora_on_linear_layers_and_the_patch_embedding_merges() {
    let gpu = gpu();
    check(&gpu, "flora", &fixture_adapter(&gpu, "flora"));
    let vit = support::tiny_vit(&gpu);
    let cfg = json!({"peft_type": "FLORA", "r": 3, "scale": 1.5, "target_modules": ["value", "fc2", "projection"]});
    check(&gpu, "flora_fresh", &perturbed(&gpu, &vit, &cfg, 9, 0.3, &scratch("flora_adapter")));
}

/// On the 9×14 ViT of 2×4 patches: LoRA and FLoRA fold into the oblong patch kernel, and the
/// merged config keeps `[height, width]` sizes.
#[test]
fn adapters_on_an_oblong_patch_conv_merge() {
    let gpu = gpu();
    let vit = Vit::load(&gpu, &fixtures().join("vit_wide")).unwrap();
    for name in ["lora", "flora"] {
        let adapter = Adapter::load(&gpu, &fixtures().join("wide").join(name), &vit).unwrap();
        let merged = check_on(&gpu, "vit_wide", &format!("wide_{name}"), &adapter);
        assert_eq!(merged.config.image_size, [9, 14]);
        assert_eq!(merged.tensors["vit.embeddings.patch_embeddings.projection.weight"].shape, [16, 3, 2, 4]);
    }
    let cfg = json!({"peft_type": "RLP", "num_prompt_tokens": 2, "r": 2, "scale": 0.5, "num_labels": 3});
    check_on(&gpu, "vit_wide", "wide_rlp", &perturbed(&gpu, &vit, &cfg, 11, 0.3, &scratch("wide_rlp_adapter")));
}

#[test]
fn rlp_merges_into_prompt_embeddings() {
    let gpu = gpu();
    let merged = check(&gpu, "rlp", &fixture_adapter(&gpu, "rlp"));
    let prompts = merged.prompts.expect("merged prompts");
    assert_eq!(prompts.shape, [3, 16]);
    let want = common::fixture("adapters_expected.safetensors").f64("rlp.prompt_embeddings");
    assert_close("P = P₀ + scale·A·B against the torch reference", &prompts.data, &want, 1e-6, 0.0);
    assert_eq!(merged.config.num_labels, 3, "the fixture's new 3-label head");
    let file = peft_wgpu::io::TensorFile::open(&scratch_path("rlp").join("model.safetensors")).unwrap();
    assert!(file.contains(PROMPT_KEY), "the model file holds {PROMPT_KEY}");
    let vit = support::tiny_vit(&gpu);
    let cfg = json!({"peft_type": "RLP", "num_prompt_tokens": 4, "r": 2, "scale": 0.5});
    check(&gpu, "rlp_fresh", &perturbed(&gpu, &vit, &cfg, 10, 0.3, &scratch("rlp_adapter")));
}

/// The folder `check` saved `name` to (without clearing it).
fn scratch_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("merge").join(name)
}

#[test]
fn the_merge_command_writes_a_model_folder() {
    let gpu = gpu();
    let out = scratch("cli_flora");
    cli::merge(&fixtures().join("vit_tiny"), &fixtures().join("adapters/flora"), &out, false).unwrap();
    let x = pixels(2);
    let want = logits(&gpu, &support::tiny_vit(&gpu), Some(&fixture_adapter(&gpu, "flora")), &x);
    let got = logits(&gpu, &Vit::load(&gpu, &out).unwrap(), None, &x);
    assert_close("merged by the command", &got, &f64s(&want), 1e-5, 0.0);
}

#[test]
fn moppa_cannot_merge() {
    let gpu = gpu();
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    let err = fixture_adapter(&gpu, "moppa").merge(&gpu, &base).expect_err("MoPPA refuses to merge");
    let message = err.to_string();
    assert!(message.contains("MoPPA") && message.contains("cannot"), "unclear error: {message}");
    assert!(matches!(&err, peft_wgpu::Error::Config { key, .. } if key == "peft_type"), "{message}");
    assert!(message.contains("adapters/moppa/adapter_config.json"), "names the adapter's config: {message}");
    let out = scratch("cli_moppa");
    assert!(cli::merge(&fixtures().join("vit_tiny"), &fixtures().join("adapters/moppa"), &out, false).is_err());
    assert!(!out.join("model.safetensors").exists(), "no partial output");
}

/// An RLP adapter trained on a model merged from another keeps both prompt sets when merged
/// in turn: its own right after CLS, then the model's, as in the forward pass.
#[test]
fn rlp_merges_into_a_model_merged_before() {
    let gpu = gpu();
    let base = VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    let first = fixture_adapter(&gpu, "rlp").merge(&gpu, &base).unwrap();
    let vit = Vit::from_weights(&gpu, &first).unwrap();
    let cfg = json!({"peft_type": "RLP", "num_prompt_tokens": 2, "r": 2, "scale": 0.5});
    let second = perturbed(&gpu, &vit, &cfg, 12, 0.3, &scratch("rlp_again_adapter"));
    let x = pixels_sized(4, first.config.image_size);
    let want = logits(&gpu, &vit, Some(&second), &x);
    let merged = second.merge(&gpu, &first).unwrap();
    let prompts = merged.prompts.as_ref().expect("prompts");
    assert_eq!(prompts.shape, [5, 16], "2 new prompts, then the 3 merged before");
    assert_eq!(&prompts.data[2 * 16..], &first.prompts.as_ref().unwrap().data[..], "the earlier prompts, unchanged");
    let got = logits(&gpu, &Vit::from_weights(&gpu, &merged).unwrap(), None, &x);
    assert_close("merged twice vs adapter on the merged model", &got, &f64s(&want), 1e-5, 0.0);
}
