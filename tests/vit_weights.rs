//! Loading transformers' ViT folders: single-file and sharded give the same weights; bad
//! folders give errors naming the culprit. No GPU needed.

use std::path::Path;

use peft_wgpu::nn::VitWeights;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn sharded_and_single_file_weights_agree() {
    let single = VitWeights::load(&fixtures().join("vit_tiny")).expect("single-file model");
    let sharded = VitWeights::load(&fixtures().join("vit_tiny_sharded")).expect("sharded model");
    assert_eq!(single.config, sharded.config);
    assert_eq!(single.tensors, sharded.tensors);
    assert_eq!(single.config.num_labels, 5);
    assert_eq!(single.config.tokens(), 17);
}

#[test]
fn missing_folder_and_missing_tensor_are_named() {
    let e = VitWeights::load(Path::new("/nonexistent/model")).expect_err("no folder");
    assert!(e.to_string().contains("/nonexistent/model"), "{e}");
    let dir = std::env::temp_dir().join(format!("peft-wgpu-vitw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(fixtures().join("vit_tiny/config.json"), dir.join("config.json")).expect("copy config");
    let e = VitWeights::load(&dir).expect_err("no weights");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sizes_may_be_written_as_pairs() {
    use peft_wgpu::io::json::JsonFile;
    use peft_wgpu::nn::VitConfig;
    let text = std::fs::read_to_string(fixtures().join("vit_tiny/config.json")).expect("config");
    let parse = |image: serde_json::Value, patch: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["image_size"] = image;
        v["patch_size"] = patch;
        VitConfig::from_json(&JsonFile::parse(Path::new("m/config.json"), v.to_string().as_bytes())?)
    };
    let c = parse(serde_json::json!([8, 8]), serde_json::json!([4, 4])).expect("pairs of equal sides");
    assert_eq!((c.image_size, c.patch_size, c.grid()), ([8, 8], [4, 4], (2, 2)));
    let c = parse(serde_json::json!([8, 12]), serde_json::json!([2, 4])).expect("a wide image of tall patches");
    assert_eq!((c.image_size, c.patch_size, c.grid(), c.tokens()), ([8, 12], [2, 4], (4, 3), 13));
    // transformers' strided conv drops what the last whole patch leaves: so does the grid.
    let c = parse(serde_json::json!([9, 14]), serde_json::json!([4, 8])).expect("sides patches do not divide");
    assert_eq!((c.grid(), c.tokens()), ((2, 1), 3));
    let e = parse(serde_json::json!([8, 12]), serde_json::json!([4, 16])).expect_err("a patch wider than the image");
    assert!(
        e.to_string().contains("`patch_size`") && e.to_string().contains("(4×16) is larger than image_size (8×12)"),
        "{e}"
    );
    let e = parse(serde_json::json!(8), serde_json::json!([4, 0])).expect_err("a zero side");
    assert!(e.to_string().contains("`patch_size`") && e.to_string().contains("is [4,0]"), "{e}");
    let e = parse(serde_json::json!({"h": 8}), serde_json::json!(4)).expect_err("an object");
    assert!(e.to_string().contains("`image_size`") && e.to_string().contains("[height, width] pair"), "{e}");
    let e = parse(serde_json::json!([8, 8, 3]), serde_json::json!(4)).expect_err("three sides");
    assert!(e.to_string().contains("is [8,8,3]"), "{e}");
}

/// Sizes a config leaves out take transformers' `ViTConfig` defaults, as transformers loads
/// such a config: ViT-B/16 at 224 (hidden 768, 12 layers of 12 heads, MLP 3072).
#[test]
fn sizes_a_config_leaves_out_take_transformers_defaults() {
    use peft_wgpu::io::json::JsonFile;
    use peft_wgpu::nn::VitConfig;
    let parse = |v: serde_json::Value| {
        VitConfig::from_json(&JsonFile::parse(Path::new("m/config.json"), v.to_string().as_bytes())?)
    };
    let c = parse(serde_json::json!({"model_type": "vit", "num_labels": 3})).expect("a config of labels only");
    let sizes = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size);
    assert_eq!((sizes, c.image_size, c.patch_size, c.num_channels), ((768, 12, 12, 3072), [224, 224], [16, 16], 3));
    let c = parse(serde_json::json!({"hidden_size": 32, "num_attention_heads": 4, "image_size": 32})).expect("some");
    assert_eq!((c.hidden_size, c.num_attention_heads, c.image_size, c.patch_size), (32, 4, [32, 32], [16, 16]));
    let e = parse(serde_json::json!({"hidden_size": 30})).expect_err("the default 12 heads do not divide 30");
    assert!(e.to_string().contains("num_attention_heads") && e.to_string().contains("(12) must divide"), "{e}");
    for key in ["image_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"] {
        let e = parse(serde_json::json!({ key: null })).expect_err("null is no value");
        assert!(e.to_string().contains(&format!("`{key}`")) && e.to_string().contains("null"), "{e}");
    }
    // transformers writes `id2label` and no `num_labels`: the labels it counts are bounded as
    // `num_labels` is, and a refusal names the file and the key.
    let many: serde_json::Map<String, serde_json::Value> =
        (0..(1usize << 20) + 1).map(|i| (i.to_string(), serde_json::json!("x"))).collect();
    let e = parse(serde_json::json!({ "id2label": many })).expect_err("more labels than a model may have");
    let text = e.to_string();
    assert!(text.contains("m/config.json") && text.contains("`id2label`") && text.contains("1048577 entries"), "{e}");
    let c = parse(serde_json::json!({"id2label": {"0": "cat", "1": "dog"}})).expect("two labels");
    assert_eq!((c.num_labels, c.id2label), (2, vec!["cat".to_string(), "dog".to_string()]));
}

/// The sharded fixture copied into a fresh temporary folder named after `name`.
fn sharded_copy(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-wgpu-vitw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(fixtures().join("vit_tiny_sharded")).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    dir
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    use peft_wgpu::io::safetensors::{self as st, HostTensor, TensorFile};
    let src = fixtures().join("vit_tiny_sharded");
    let dir = sharded_copy("stale");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).expect("index")).expect("json");
    // A tensor whose indexed shard is read after the first one.
    let first = "model-00001-of-00006.safetensors";
    let good = VitWeights::load(&src).expect("model");
    let map = index["weight_map"].as_object().expect("weight_map");
    let key = map.iter().find(|(k, f)| f.as_str() != Some(first) && good.tensors.contains_key(*k)).expect("a key").0;
    // A stale copy (zeros) of it left in the first shard, as an interrupted re-shard might.
    let shard = TensorFile::open(&dir.join(first)).expect("shard");
    let mut tensors: Vec<(String, HostTensor)> = shard.keys().map(|k| (k.to_string(), shard.f32(k).unwrap())).collect();
    tensors.push((key.clone(), HostTensor::zeros(&good.tensors[key].shape).unwrap()));
    drop(shard);
    let list: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&dir.join(first), &list, None).expect("rewrite shard");
    // The index names one copy, transformers reads the shard it loads last: one folder, two
    // models, so it is refused, naming the tensor and both shards.
    let err = VitWeights::load(&dir).expect_err("a tensor in two shards").to_string();
    let indexed = map[key].as_str().expect("shard name");
    for part in [key.as_str(), first, indexed, "model.safetensors.index.json"] {
        assert!(err.contains(part), "{part} in: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn save_round_trips() {
    let w = VitWeights::load(&fixtures().join("vit_tiny")).expect("model");
    let dir = std::env::temp_dir().join(format!("peft-wgpu-vits-{}", std::process::id()));
    w.save(&dir).expect("save");
    let back = VitWeights::load(&dir).expect("reload");
    assert_eq!(back.tensors, w.tensors);
    assert_eq!(back.config, w.config);
    std::fs::remove_dir_all(&dir).ok();
}

/// Saving over a sharded model removes its index and the shards it lists, and nothing else
/// the index names: a leftover index listing `config.json` costs only itself.
#[test]
fn saving_over_a_sharded_model_removes_only_its_shards() {
    let w = VitWeights::load(&fixtures().join("vit_tiny")).expect("model");
    let dir = sharded_copy("reshard");
    let shards: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("model-"))
        .collect();
    assert!(!shards.is_empty(), "the fixture is sharded");
    w.save(&dir).expect("save over the sharded model");
    for shard in &shards {
        assert!(!dir.join(shard).exists(), "{shard} left behind");
    }
    assert!(!dir.join("model.safetensors.index.json").exists(), "index left behind");
    assert_eq!(VitWeights::load(&dir).expect("reload").tensors, w.tensors);

    let index = r#"{"weight_map": {"classifier.weight": "config.json", "classifier.bias": "../x.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    w.save(&dir).expect("save beside a leftover index");
    assert!(dir.join("config.json").is_file(), "a file the index lists that is not a shard is kept");
    assert_eq!(VitWeights::load(&dir).expect("reload").config, w.config);

    // `Model.safetensors` is the file just written where names ignore case (macOS, Windows):
    // a leftover index that lists it must not make the save remove it.
    let index = r#"{"weight_map": {"classifier.weight": "Model.safetensors", "classifier.bias": "MODEL.SAFETENSORS"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    std::fs::write(dir.join("Model.safetensors"), b"kept").unwrap();
    w.save(&dir).expect("save beside an index naming the weights in other case");
    assert!(dir.join("Model.safetensors").exists(), "a listed name equal to model.safetensors but for case is kept");
    assert_eq!(VitWeights::load(&dir).expect("reload").tensors, w.tensors);
    std::fs::remove_dir_all(&dir).ok();
}

/// An index whose shard names leave the folder, or name no plain file in it (a drive-relative
/// `C:x` or a stream `a:b` on Windows), is refused by name before anything is read.
#[test]
fn shard_names_outside_the_folder_are_refused() {
    let src = fixtures().join("vit_tiny_sharded");
    let dir = std::env::temp_dir().join(format!("peft-wgpu-vitw-names-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    for name in
        ["../x.safetensors", "sub/x.safetensors", "sub\\x.safetensors", "C:x.safetensors", "a:b.safetensors", ".", ""]
    {
        let index = serde_json::json!({"weight_map": {"classifier.weight": name}}).to_string();
        std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
        let e = VitWeights::load(&dir).expect_err(name);
        let text = e.to_string();
        assert!(text.contains("weight_map") && text.contains("model.safetensors.index.json"), "{name}: {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A tensor the index of a sharded model places nowhere, and no shard it lists holds, is the
/// index's fault: the error names the index and the tensor, not a shard.
#[test]
fn a_tensor_no_listed_shard_holds_is_blamed_on_the_index() {
    let dir = sharded_copy("unplaced");
    let index_path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index")).expect("json");
    let key = "vit.encoder.layer.1.output.dense.weight";
    let shard = index["weight_map"][key].as_str().expect("the fixture places the key").to_string();
    // The key's shard dropped from the index (its other tensors too), as if never written.
    index["weight_map"].as_object_mut().expect("weight_map").retain(|_, f| f.as_str() != Some(shard.as_str()));
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("write index");
    let err = VitWeights::load(&dir).expect_err("a tensor placed nowhere").to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains("weight_map"), "{err}");
    // The first tensor (in the model's order) of the dropped shard is the one named.
    assert!(err.contains("has no entry for tensor `vit.") && err.contains("no shard it lists holds it"), "{err}");
    assert!(!err.contains("model-0000"), "a shard blamed: {err}");
    std::fs::remove_dir_all(&dir).ok();
}
