//! Property tests over the config loaders (a bounded fuzz run in the normal test suite):
//! JSON bytes and config objects with random keys set to random values never panic, every
//! error names the file, and adapter configs that parse are checked against a model on the
//! host ([`Adapter::check`]), which exercises the whole adapter build. The file readers:
//! `fuzz_files.rs`.
//!
//! For a longer run: `PROPTEST_CASES=100000 cargo test --release --test fuzz_configs`.

mod fuzz_support;

use std::path::Path;

use fuzz_support::{config, fixture, names_file};
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::TensorFile;
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::VitConfig;
use peft_wgpu::nn::weights::expected_shapes;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Values that config fields meet in practice and in corrupt files.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![-3i64..70, Just(i64::MIN), Just(i64::MAX), Just(1 << 32), Just(65536), Just(65537)]
            .prop_map(Value::from),
        prop_oneof![Just(u64::MAX), any::<u64>()].prop_map(Value::from),
        prop_oneof![-2.0f64..2.0, Just(1e308), Just(-0.0), Just(2.5), Just(1e-320)].prop_map(Value::from),
        prop_oneof![
            Just("LORA"),
            Just("lora"),
            Just("FLORA"),
            Just("MOPPA"),
            Just("RLP"),
            Just("query"),
            Just("value"),
            Just("dense"),
            Just("q_proj"),
            Just("projection"),
            Just("classifier"),
            Just("none"),
            Just("gelu"),
            Just("vit"),
            Just(".*"),
            Just("("),
            Just("vit\\.layers\\.1\\..*_proj"),
            Just(""),
        ]
        .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![(0u32..8).prop_map(|i| i.to_string()), Just("query".to_string()), "[a-z]{1,6}"],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every key the adapter and model configs read.
const KEYS: [&str; 38] = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "rank_pattern",
    "alpha_pattern",
    "lora_dropout",
    "use_rslora",
    "bias",
    "use_dora",
    "fan_in_fan_out",
    "lora_bias",
    "modules_to_save",
    "num_labels",
    "scale",
    "num_heads",
    "layers",
    "entropy_scale",
    "entropy_decay_fraction",
    "num_prompt_tokens",
    "model_type",
    "hidden_act",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
    "num_channels",
    "layer_norm_eps",
    "qkv_bias",
    "id2label",
    "label2id",
    "weight_map",
    "__metadata__",
    "",
];

/// A config object: a valid base (adapter or model) with random keys set to random values.
fn config_object() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]})),
        Just(json!({"peft_type": "FLORA", "r": 3, "scale": 0.5, "target_modules": ["query", "projection"]})),
        Just(json!({"peft_type": "MOPPA", "entropy_scale": 0.1})),
        Just(json!({"peft_type": "RLP", "num_prompt_tokens": 3, "r": 2, "num_labels": 3})),
        Just(
            serde_json::from_slice::<Value>(&std::fs::read(fixture("vit_tiny/config.json")).expect("config"))
                .expect("json")
        ),
    ];
    (base, prop::collection::vec((0..KEYS.len(), json_value()), 0..5)).prop_map(|(mut base, edits)| {
        for (k, v) in edits {
            base[KEYS[k]] = v;
        }
        base
    })
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn json_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let path = Path::new("fuzzed_config.json");
        match JsonFile::parse(path, &bytes) {
            Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            Ok(j) => {
                for e in [AdapterConfig::from_json(&j).err(), VitConfig::from_json(&j).err()].into_iter().flatten() {
                    prop_assert!(names_file(&e, path), "{e}");
                }
            }
        }
    }

    #[test]
    fn configs_never_panic_and_adapters_check_against_the_model(value in config_object()) {
        let path = Path::new("fuzzed/adapter_config.json");
        let j = JsonFile::parse(path, &serde_json::to_vec(&value).expect("json")).expect("an object");
        match VitConfig::from_json(&j) {
            Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            Ok(model) => {
                // Sizes the model implies are computed without overflow.
                let total: u128 = expected_shapes(&model)
                    .iter()
                    .map(|(_, s)| s.iter().map(|&d| d as u128).product::<u128>())
                    .sum();
                prop_assert!(total > 0);
            }
        }
        match AdapterConfig::from_json(&j) {
            Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            Ok(config) => {
                let model = tiny_model();
                if let Err(e) = Adapter::check(config.clone(), path, None, &model) {
                    prop_assert!(names_file(&e, path), "{e}");
                }
                // The same config against the fixture adapters' tensors.
                for name in ["lora_v4", "flora", "rlp", "moppa"] {
                    let weights = fixture(&format!("adapters/{name}/adapter_model.safetensors"));
                    let file = TensorFile::open(&weights).expect("fixture adapter");
                    if let Err(e) = Adapter::check(config.clone(), path, Some(&file), &model) {
                        prop_assert!(names_file(&e, path) || names_file(&e, &weights), "{e}");
                    }
                }
            }
        }
    }
}

/// The tiny test model's config.
fn tiny_model() -> VitConfig {
    VitConfig::from_dir(&fixture("vit_tiny")).expect("tiny model config")
}
