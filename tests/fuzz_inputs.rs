//! Property tests over the file loaders (a bounded fuzz run in the normal test suite): the
//! safetensors reader, the JSON config loaders and the data loader, fed random bytes,
//! mutations of real files and structured nonsense, never panic, and every error they return
//! names the file it is about. Adapter configs that parse are also checked against a model
//! on the host ([`Adapter::check`]), which exercises the whole adapter build.
//!
//! Cases per property are kept small so the suite takes seconds; for a longer run set
//! `PROPTEST_CASES` (e.g. `PROPTEST_CASES=100000 cargo test --release --test fuzz_inputs`),
//! and `PROPTEST_RNG_SEED` to replay a run. `fuzz/` has cargo-fuzz targets for the same
//! entry points.

use std::path::{Path, PathBuf};

use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::io::{Dataset, TensorFile};
use peft_wgpu::nn::VitConfig;
use peft_wgpu::nn::weights::expected_shapes;
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Cases per property unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// The error of a loader must name `path` (by its file name at least).
fn names_file(e: &peft_wgpu::Error, path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    e.to_string().contains(&name)
}

/// Opens `bytes` as a safetensors file and reads every tensor every way; no panic allowed.
fn exercise_tensor_file(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let path = Path::new("fuzzed.safetensors");
    match TensorFile::from_bytes(path, bytes) {
        Err(e) => prop_assert!(names_file(&e, path), "error without the file: {e}"),
        Ok(file) => {
            let keys: Vec<String> = file.keys().map(str::to_string).collect();
            for k in &keys {
                let shape = file.shape(k).map(<[usize]>::to_vec).unwrap_or_default();
                for r in [file.f32(k).map(|_| ()), file.integers(k).map(|_| ()), file.f32_shaped(k, &shape).map(|_| ())]
                {
                    if let Err(e) = r {
                        prop_assert!(names_file(&e, path), "error without the file: {e}");
                    }
                }
            }
            if let Err(e) = Dataset::from_file(&file) {
                prop_assert!(names_file(&e, path), "error without the file: {e}");
            }
        }
    }
    Ok(())
}

/// The real files the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    [
        "vit_tiny/model.safetensors",
        "adapters/lora_v4/adapter_model.safetensors",
        "adapters/rlp/adapter_model.safetensors",
    ]
    .iter()
    .map(|f| std::fs::read(fixture(f)).expect("fixture"))
    .chain([data_file(&[4, 3, 8, 8], &[0, 1, 2, 3])])
    .collect()
}

/// A valid data file as bytes.
fn data_file(shape: &[usize], labels: &[i64]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let pixels: Vec<u8> = (0..n).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect();
    let labels: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let views = vec![
        ("labels", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![labels.len() / 8], &labels)),
        ("pixel_values", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &pixels)),
    ];
    let views: Vec<(&str, _)> = views.into_iter().map(|(k, v)| (k, v.expect("view"))).collect();
    safetensors::serialize(views, None).expect("serialize")
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Rewrites a number in the header (offsets, shapes, the length) to `value`.
    Number {
        which: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), prop_oneof![0u64..64, Just(u64::MAX), Just(u32::MAX as u64 + 1), any::<u64>()])
            .prop_map(|(which, value)| Mutation::Number { which, value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b = *byte;
            }
        }
        Mutation::Truncate { len: l } => bytes.truncate(l % len),
        Mutation::Insert { at, bytes: b } => {
            let at = at % len;
            bytes.splice(at.min(bytes.len())..at.min(bytes.len()), b.iter().copied());
        }
        Mutation::Number { which, value } => {
            // Numbers of the JSON header: runs of ASCII digits after the 8-byte length.
            let Some(head) = bytes.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()) else { return };
            let n = (u64::from_le_bytes(head) as usize).min(bytes.len().saturating_sub(8));
            let header = &bytes[8..8 + n];
            let mut runs = Vec::new();
            let mut i = 0;
            while i < header.len() {
                if header[i].is_ascii_digit() {
                    let start = i;
                    while i < header.len() && header[i].is_ascii_digit() {
                        i += 1;
                    }
                    runs.push((8 + start, 8 + i));
                } else {
                    i += 1;
                }
            }
            if runs.is_empty() {
                return;
            }
            let (a, b) = runs[which % runs.len()];
            bytes.splice(a..b, value.to_string().into_bytes());
            // Keep the length field in step with the header so the body is what is tested.
            let new_len = (n + value.to_string().len() + a - b) as u64;
            bytes[..8].copy_from_slice(&new_len.to_le_bytes());
        }
    }
}

/// A safetensors header built from parts, valid or not: dtypes (some unknown), shapes with
/// zeros and huge dimensions, offsets that fit, overlap, leave gaps or point past the end.
fn structured_file() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop_oneof![
        Just("F32"),
        Just("F16"),
        Just("BF16"),
        Just("F64"),
        Just("I64"),
        Just("I32"),
        Just("U8"),
        Just("BOOL"),
        Just("F8_E4M3"),
        Just("F4"),
        Just("Q4"),
    ];
    let dim = prop_oneof![0usize..6, Just(1 << 31), Just(usize::MAX / 2), Just(usize::MAX)];
    let entry = (
        prop_oneof![Just("pixel_values".to_string()), Just("labels".to_string()), "[a-z_.0-9]{1,12}"],
        dtype,
        prop::collection::vec(dim, 0..4),
        (0u64..512, 0u64..512),
    );
    (prop::collection::vec(entry, 0..5), prop::collection::vec(any::<u8>(), 0..600), any::<bool>()).prop_map(
        |(entries, data, with_meta)| {
            let mut header = serde_json::Map::new();
            if with_meta {
                header.insert("__metadata__".into(), json!({"format": "pt"}));
            }
            for (name, dtype, shape, (a, b)) in entries {
                header.insert(name, json!({"dtype": dtype, "shape": shape, "data_offsets": [a, b]}));
            }
            let text = serde_json::to_vec(&Value::Object(header)).expect("json");
            let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
            bytes.extend(text);
            bytes.extend(data);
            bytes
        },
    )
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn safetensors_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise_tensor_file(bytes)?;
    }

    #[test]
    fn safetensors_mutated_files_never_panic(
        seed in 0usize..4,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = seeds().swap_remove(seed);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        exercise_tensor_file(bytes)?;
    }

    #[test]
    fn safetensors_structured_headers_never_panic(bytes in structured_file()) {
        exercise_tensor_file(bytes)?;
    }
}

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

fn tiny_model() -> VitConfig {
    VitConfig::from_dir(&fixture("vit_tiny")).expect("tiny model config")
}

/// A data file built from parts: shapes (some not 4-D), label dtypes, label values (negative,
/// huge), pixels with non-finite values.
fn data_parts() -> impl Strategy<Value = Vec<u8>> {
    let shape = prop::collection::vec(0usize..5, 0..6);
    let label_dtype = prop_oneof![
        Just(safetensors::Dtype::I64),
        Just(safetensors::Dtype::I32),
        Just(safetensors::Dtype::U8),
        Just(safetensors::Dtype::U64),
        Just(safetensors::Dtype::F32),
        Just(safetensors::Dtype::BOOL),
    ];
    let pixel = prop_oneof![-2.0f32..2.0, Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)];
    (shape, label_dtype, prop::collection::vec(any::<u8>(), 0..64), prop::collection::vec(pixel, 0..700)).prop_map(
        |(shape, dtype, label_bytes, pixels)| {
            let n: usize = shape.iter().product();
            let pixels: Vec<u8> = pixels.iter().cycle().take(n).flat_map(|p| p.to_le_bytes()).collect();
            let width = dtype.bitsize() / 8;
            let count = label_bytes.len() / width;
            let labels = &label_bytes[..count * width];
            let views = [
                ("labels", safetensors::tensor::TensorView::new(dtype, vec![count], labels)),
                ("pixel_values", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &pixels)),
            ];
            let views: Vec<(&str, _)> = views.into_iter().filter_map(|(k, v)| v.ok().map(|v| (k, v))).collect();
            safetensors::serialize(views, None).expect("serialize")
        },
    )
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn data_files_never_panic_and_errors_name_the_file(
        bytes in data_parts(),
        labels in 0usize..8,
        dims in (0usize..5, 0usize..9, 0usize..9),
    ) {
        let path = Path::new("fuzzed_data.safetensors");
        let data = match TensorFile::from_bytes(path, bytes).and_then(|f| Dataset::from_file(&f)) {
            Err(e) => {
                prop_assert!(names_file(&e, path), "{e}");
                return Ok(());
            }
            Ok(d) => d,
        };
        prop_assert!(!data.is_empty() && data.pixels.iter().all(|p| p.is_finite()));
        if let Err(e) = data.check_fits(dims.0, [dims.1, dims.2], labels) {
            prop_assert!(names_file(&e, path), "{e}");
        }
        let rows: Vec<usize> = (0..data.len()).collect();
        let (pixels, got) = data.gather(&rows).expect("rows of the data");
        prop_assert_eq!(pixels.len(), data.pixels.len());
        prop_assert_eq!(got.len(), data.len());
    }
}
