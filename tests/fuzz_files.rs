//! Property tests over the file readers (a bounded fuzz run in the normal test suite): the
//! safetensors reader and the data loader, fed random bytes, mutations of real files and
//! structured nonsense, never panic, and every error they return names the file it is about.
//! The config loaders: `fuzz_configs.rs`.
//!
//! Cases per property are kept small so the suite takes seconds; for a longer run set
//! `PROPTEST_CASES` (e.g. `PROPTEST_CASES=100000 cargo test --release --test fuzz_files`),
//! and `PROPTEST_RNG_SEED` to replay a run. `fuzz/` has cargo-fuzz targets for the same
//! entry points.

mod fuzz_support;

use std::path::Path;

use fuzz_support::{config, fixture, names_file};
use peft_wgpu::io::{Dataset, TensorFile};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Opens `bytes` as a safetensors file and reads every tensor every way; no panic allowed.
fn exercise_tensor_file(bytes: &[u8]) -> Result<(), TestCaseError> {
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
            // Taking an f32 tensor where it lies, as a data set's pixels are taken.
            for k in &keys {
                let bits =
                    |t: peft_wgpu::io::HostTensor| (t.shape, t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                let taken = TensorFile::from_bytes(path, bytes).and_then(|f| f.into_f32_any(k));
                prop_assert_eq!(taken.ok().map(bits), file.f32_any(k).ok().map(bits), "tensor `{}` taken in place", k);
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
        exercise_tensor_file(&bytes)?;
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
        exercise_tensor_file(&bytes)?;
    }

    #[test]
    fn safetensors_structured_headers_never_panic(bytes in structured_file()) {
        exercise_tensor_file(&bytes)?;
    }
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
        let data = match TensorFile::from_bytes(path, &bytes).and_then(|f| Dataset::from_file(&f)) {
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
