//! Bad inputs through the binary (SPEC §11, §14): wrong paths, broken safetensors files,
//! inconsistent configs, bad data, bad numbers and tuning variables (adapters made for
//! another model, device limits and non-finite results: `cli_limits.rs`; outputs:
//! `cli_outputs.rs`; pipes and devices: `cli_pipes.rs`). Each must end with its exit code
//! and one short line naming the file, key or value at fault, never a panic; errors in the
//! inputs must be found before any GPU work.

mod cli_support;

use cli_support::*;
use safetensors::Dtype;

// ---------------------------------------------------------------------------------------
// Paths

#[test]
fn paths_missing_or_of_the_wrong_kind_are_named() {
    let dir = scratch("paths");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = dir.join("out");
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    let missing = dir.join("no-such-model");
    fails(&train_args(s(&missing), l, d, o, &[]), INPUT, &["no-such-model", "not found", "model folder"]);
    let config = model.join("config.json");
    fails(&train_args(s(&config), l, d, o, &[]), INPUT, &["config.json", "is a file", "model folder"]);
    // An adapter folder where the model goes, and the reverse.
    fails(&train_args(l, l, d, o, &[]), INPUT, &["lora_v4", "no config.json", "looks like an adapter folder"]);
    fails(&train_args(m, m, d, o, &[]), INPUT, &["vit_tiny", "no adapter_config.json", "looks like a model folder"]);
    let config_file = lora.join("adapter_config.json");
    fails(&train_args(m, s(&config_file), d, o, &[]), INPUT, &["adapter_config.json", "is a file", "--init"]);
    // The reverse: an adapter folder where its config goes.
    fails(
        &["train", "--model", m, "--adapter-config", l, "--data", d, "--out", o],
        INPUT,
        &["lora_v4", "is a folder", "adapter_config.json", "pass the folder as --init"],
    );
    fails(&train_args(m, l, s(&dir), o, &[]), INPUT, &[s(&dir), "is a folder", "--data"]);
    // Control characters in a name are escaped: a carriage return or an escape sequence would
    // hide the start of the line or move the cursor on a terminal.
    let tricky = dir.join("real.safetensors\rfake: all ok\u{1b}[2J");
    let line = fails(&train_args(m, l, s(&tricky), o, &[]), INPUT, &["real.safetensors\\rfake: all ok\\u{1b}[2J"]);
    assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    let no_data = dir.join("nothing.safetensors");
    fails(&train_args(m, l, s(&no_data), o, &[]), INPUT, &["nothing.safetensors", "not found"]);
    let no_config = dir.join("missing_config.json");
    fails(
        &["train", "--model", m, "--adapter-config", s(&no_config), "--data", d, "--out", o],
        INPUT,
        &["missing_config.json", "not found"],
    );
    // A device that never ends is read only up to the size limit of a config.
    #[cfg(unix)]
    fails(
        &["train", "--model", m, "--adapter-config", "/dev/zero", "--data", d, "--out", o],
        INPUT,
        &["/dev/zero", "too large for a config file"],
    );
    // Outputs: a file where a folder goes, a folder inside a file, a folder where a file goes.
    fails(&train_args(m, l, d, d, &[]), USAGE, &["--out", "data.safetensors", "is a file"]);
    let inside = data.join("sub");
    fails(&train_args(m, l, d, s(&inside), &[]), USAGE, &["--out", "which is a file"]);
    fails(&["eval", "--model", m, "--data", d, "--logits-out", s(&dir)], USAGE, &["--logits-out", "is a folder"]);
    let nowhere = dir.join("no/such/folder/logits.safetensors");
    fails(
        &["eval", "--model", m, "--data", d, "--logits-out", s(&nowhere)],
        USAGE,
        &["--logits-out", "does not exist"],
    );
    let under_file = ["eval", "--model", m, "--data", d, "--logits-out", s(&inside)];
    fails(&under_file, USAGE, &["--logits-out", "is inside", "data.safetensors, which is a file"]);
    // A trailing `/` or `/.` makes a file look like a folder that does not exist yet; outputs
    // so written are refused before the run, not after it.
    for slashed in [format!("{d}/"), format!("{d}/.")] {
        fails(&train_args(m, l, d, &slashed, &[]), USAGE, &["--out", "data.safetensors", "is a file"]);
        fails(&["merge", "--model", m, "--adapter", m, "--out", &slashed], USAGE, &["--out", "is a file"]);
    }
    for folder_like in ["new/", "new/.", "new/.."].map(|end| format!("{}/{end}", dir.display())) {
        let eval = ["eval", "--model", m, "--data", d, "--logits-out", &folder_like];
        fails(&eval, USAGE, &["--logits-out", "ends as a folder does", "expected a file name"]);
        fails(&["demo", "--svg", &folder_like], USAGE, &["--svg", "ends as a folder does"]);
    }
    let no_adapter = dir.join("no-adapter");
    fails(&["eval", "--model", m, "--adapter", s(&no_adapter), "--data", d], INPUT, &["no-adapter", "not found"]);
    // PEFT saves an adapter not named "default" in a subfolder of its name.
    let named = dir.join("named");
    std::fs::create_dir_all(&named).expect("named");
    adapter_copy("lora_v4", &named);
    fails(
        &["eval", "--model", m, "--adapter", s(&named), "--data", d],
        INPUT,
        &["no adapter_config.json", "`lora_v4` inside holds one", "named/lora_v4"],
    );
    // An adapter folder without its tensors.
    let half = adapter_copy("lora_v4", &dir);
    std::fs::remove_file(half.join("adapter_model.safetensors")).expect("remove");
    fails(
        &["eval", "--model", m, "--adapter", s(&half), "--data", d],
        INPUT,
        &["adapter_model.safetensors", "not found"],
    );
    // Folders saved as PyTorch pickles by older transformers and PEFT.
    std::fs::write(half.join("adapter_model.bin"), b"PK\x03\x04").expect("pickle");
    for args in [
        vec!["eval", "--model", m, "--adapter", s(&half), "--data", d],
        vec!["train", "--model", m, "--adapter-config", s(&config_file), "--init", s(&half), "--data", d, "--out", o],
    ] {
        fails(&args, INPUT, &["adapter_model.bin", "PyTorch pickle", "adapter_model.safetensors"]);
    }
    let pickled = model_copy(&dir.join("pickled"));
    std::fs::rename(pickled.join("model.safetensors"), pickled.join("pytorch_model.bin")).expect("rename");
    fails(&["eval", "--model", s(&pickled), "--data", d], INPUT, &["pytorch_model.bin", "PyTorch pickle"]);
    // Sharded pickles, and the weights of transformers' other frameworks, say so too.
    std::fs::rename(pickled.join("pytorch_model.bin"), pickled.join("pytorch_model-00001-of-00001.bin"))
        .expect("rename");
    std::fs::write(pickled.join("pytorch_model.bin.index.json"), r#"{"weight_map": {}}"#).expect("index");
    fails(&["eval", "--model", s(&pickled), "--data", d], INPUT, &["pytorch_model.bin.index.json", "pickle shards"]);
    // Weights behind a link in a loop: the link is named with the system's reason.
    #[cfg(unix)]
    {
        let looped = model_copy(&dir.join("looped"));
        std::fs::remove_file(looped.join("model.safetensors")).expect("remove");
        std::os::unix::fs::symlink("other", looped.join("model.safetensors")).expect("link");
        std::os::unix::fs::symlink("model.safetensors", looped.join("other")).expect("link");
        fails(
            &["eval", "--model", s(&looped), "--data", d],
            INPUT,
            &["looped/model/model.safetensors", "symbolic links"],
        );
    }
    let tensorflow = model_copy(&dir.join("tensorflow"));
    std::fs::rename(tensorflow.join("model.safetensors"), tensorflow.join("tf_model.h5")).expect("rename");
    fails(&["eval", "--model", s(&tensorflow), "--data", d], INPUT, &["tf_model.h5", "TensorFlow or Flax"]);
    // Weights saved under a transformers `variant` are named with the way out.
    let variant = model_copy(&dir.join("variant"));
    std::fs::rename(variant.join("model.safetensors"), variant.join("model.fp16.safetensors")).expect("rename");
    fails(&["eval", "--model", s(&variant), "--data", d], INPUT, &["model.safetensors", "`model.fp16.safetensors`"]);
    // A config that is a link leading nowhere is named as such, not as missing.
    #[cfg(unix)]
    {
        let linked = model_copy(&dir.join("linked"));
        let config = linked.join("config.json");
        std::fs::remove_file(&config).expect("remove");
        std::os::unix::fs::symlink("config.json", &config).expect("a link to itself");
        fails(&["eval", "--model", s(&linked), "--data", d], INPUT, &["config.json", "symbolic link"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Safetensors files

#[test]
fn corrupt_and_truncated_safetensors_are_named() {
    let dir = scratch("safetensors");
    let data = good_data(&dir);
    let d = s(&data);
    let model = model_copy(&dir);
    let weights = model.join("model.safetensors");
    let good = std::fs::read(&weights).expect("model bytes");
    let eval = |m: &str| fails_line(&["eval", "--model", m, "--data", d]);

    std::fs::write(&weights, &good[..good.len() - 100]).expect("truncate");
    let line = eval(s(&model));
    assert!(line.contains("model.safetensors") && line.contains("truncated") && line.contains('`'), "{line}");

    std::fs::write(&weights, &good[..5]).expect("truncate");
    assert!(eval(s(&model)).contains("only 5 bytes"));

    std::fs::write(&weights, b"").expect("empty");
    assert!(eval(s(&model)).contains("only 0 bytes"));

    std::fs::write(&weights, b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 22292\n")
        .expect("lfs");
    assert!(eval(s(&model)).contains("Git LFS pointer"));

    std::fs::write(&weights, b"<!DOCTYPE html><html><body>Not Found</body></html>").expect("html");
    assert!(eval(s(&model)).contains("HTML"));

    let mut garbage_header = good.clone();
    garbage_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&weights, &garbage_header).expect("header length");
    assert!(eval(s(&model)).contains("announce a header of 18446744073709551615 bytes"));

    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    std::fs::write(&weights, &bad_json).expect("header json");
    assert!(eval(s(&model)).contains("not a valid safetensors file"));

    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 12]);
    std::fs::write(&weights, &extra).expect("trailing bytes");
    assert!(eval(s(&model)).contains("12 unexpected bytes"));

    // An offset that points past the data: rewrite one tensor's end offset in the header.
    let header_len = u64::from_le_bytes(good[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(good[8..8 + header_len].to_vec()).expect("utf-8 header");
    let mut h: serde_json::Value = serde_json::from_str(&header).expect("json header");
    let key = "vit.layernorm.weight";
    let end = h[key]["data_offsets"][1].as_u64().expect("offset");
    h[key]["data_offsets"][1] = (end + 1_000_000).into();
    let mut text = serde_json::to_string(&h).expect("json");
    while text.len() < header_len {
        text.push(' ');
    }
    let mut moved = (text.len() as u64).to_le_bytes().to_vec();
    moved.extend_from_slice(text.as_bytes());
    moved.extend_from_slice(&good[8 + header_len..]);
    std::fs::write(&weights, &moved).expect("bad offset");
    let line = eval(s(&model));
    assert!(line.contains("model.safetensors"), "{line}");

    // The data file and the adapter file get the same treatment.
    std::fs::write(&weights, &good).expect("restore");
    let data_bytes = std::fs::read(&data).expect("data");
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &data_bytes[..data_bytes.len() - 7]).expect("cut data");
    let line = fails_line(&["eval", "--model", s(&model), "--data", s(&cut)]);
    assert!(line.contains("cut.safetensors") && line.contains("truncated") && line.contains("pixel_values"), "{line}");
    let adapter = adapter_copy("lora_v4", &dir);
    let aw = adapter.join("adapter_model.safetensors");
    let ab = std::fs::read(&aw).expect("adapter");
    std::fs::write(&aw, &ab[..ab.len() / 2]).expect("cut adapter");
    let line = fails_line(&["eval", "--model", s(&model), "--adapter", s(&adapter), "--data", d]);
    assert!(line.contains("adapter_model.safetensors") && line.contains("truncated"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `args` (an `eval` or similar failing on input) and returns its checked error line.
fn fails_line(args: &[&str]) -> String {
    fails(args, INPUT, &[])
}

#[test]
fn missing_misshaped_and_mistyped_model_tensors_are_named() {
    let dir = scratch("tensors");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let weights = model.join("model.safetensors");
    let good = std::fs::read(&weights).expect("model bytes");
    let eval = ["eval", "--model", s(&model), "--data", s(&data)];

    let key = "vit.encoder.layer.1.attention.attention.value.weight";
    edit_tensors(&weights, |t| t.retain(|(k, ..)| k != key));
    fails(&eval, INPUT, &["model.safetensors", "missing tensor", key]);

    // A backbone checkpoint: ViTModel's keys have no `vit.` prefix and there is no head.
    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| {
        t.retain(|(k, ..)| !k.starts_with("classifier."));
        t.iter_mut().for_each(|e| e.0 = e.0.trim_start_matches("vit.").to_string());
    });
    // Alone it cannot classify (with an adapter that brings a head it can: tests/cli_backbone.rs).
    fails(&eval, INPUT, &[s(&model), "has no classifier", "num_labels"]);
    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| t.retain(|(k, ..)| !k.starts_with("classifier.")));
    fails(&eval, INPUT, &[s(&model), "has no classifier", "num_labels"]);
    // A backbone missing a weight names it as the file spells it.
    edit_tensors(&weights, |t| {
        t.retain(|(k, ..)| k != key);
        t.iter_mut().for_each(|e| e.0 = e.0.trim_start_matches("vit.").to_string());
    });
    fails(&eval, INPUT, &["model.safetensors", "missing tensor", "`encoder.layer.1.attention.attention.value.weight`"]);
    // Half a classifier is a missing tensor, not a missing head.
    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| t.retain(|(k, ..)| k != "classifier.bias"));
    fails(&eval, INPUT, &["model.safetensors", "missing tensor", "classifier.bias"]);

    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| {
        let e = t.iter_mut().find(|(k, ..)| k == key).expect("key");
        e.2 = vec![8, 32];
    });
    fails(&eval, INPUT, &["model.safetensors", key, "[8, 32]", "expected shape [16, 16]", "hidden_size 16"]);
    // A config whose head is not the weights' (its id2label left out, say): the sizes the
    // expected shape comes from are shown with it.
    std::fs::write(&weights, &good).expect("restore");
    let config = model.join("config.json");
    let good_config = std::fs::read(&config).expect("config bytes");
    edit_json(&config, |c| {
        c["num_labels"] = serde_json::json!(2);
        c.as_object_mut().expect("object").remove("id2label");
        c.as_object_mut().expect("object").remove("label2id");
    });
    fails(&eval, INPUT, &["model.safetensors", "classifier.weight", "expected shape [2, 16]", "num_labels 2"]);
    std::fs::write(&config, &good_config).expect("restore the config");

    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| {
        let e = t.iter_mut().find(|(k, ..)| k == key).expect("key");
        e.1 = Dtype::I32;
    });
    fails(&eval, INPUT, &["model.safetensors", key, "I32", "float tensor"]);

    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| {
        let e = t.iter_mut().find(|(k, ..)| k == key).expect("key");
        e.3[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    fails(&eval, INPUT, &["model.safetensors", key, "inf", "[0, 1]"]);

    // One weight under both namings: which one counts would be a guess.
    std::fs::write(&weights, &good).expect("restore");
    edit_tensors(&weights, |t| {
        let e = t.iter().find(|(k, ..)| k == key).expect("key").clone();
        t.push(("vit.layers.1.attention.v_proj.weight".into(), e.1, e.2, e.3));
    });
    fails(&eval, INPUT, &["model.safetensors", key, "vit.layers.1.attention.v_proj.weight", "keep one"]);
    std::fs::write(&weights, &good).expect("restore");
    std::fs::remove_dir_all(&dir).ok();
}

/// A config that does not describe its weights, where transformers would drop the extra
/// tensors with a warning, is refused naming one: a layer past `num_hidden_layers`, query,
/// key or value biases with `qkv_bias` false. Other extra tensors (a pooler) are passed over.
#[test]
fn weights_of_parts_the_config_lacks_are_named() {
    let dir = scratch("stray-weights");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let config = model.join("config.json");
    let eval = ["eval", "--model", s(&model), "--data", s(&data)];
    let good = std::fs::read(&config).expect("config");
    edit_json(&config, |c| c["num_hidden_layers"] = serde_json::json!(1));
    fails(&eval, INPUT, &["model.safetensors", "vit.encoder.layer.1.", "layer 1", "num_hidden_layers 1"]);
    std::fs::write(&config, &good).expect("restore");
    edit_json(&config, |c| c["qkv_bias"] = serde_json::json!(false));
    fails(&eval, INPUT, &["model.safetensors", "attention.attention.", ".bias", "qkv_bias false"]);
    std::fs::write(&config, &good).expect("restore");
    edit_tensors(&model.join("model.safetensors"), |t| {
        t.push(("vit.pooler.dense.bias".into(), Dtype::F32, vec![1], f32_bytes(&[0.5])));
    });
    succeeds(&eval);
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Configs

#[test]
fn inconsistent_model_configs_are_named() {
    let dir = scratch("vit-config");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let config = model.join("config.json");
    let good = std::fs::read(&config).expect("config");
    let eval = ["eval", "--model", s(&model), "--data", s(&data)];
    let cases: [(&str, serde_json::Value, &[&str]); 14] = [
        ("num_attention_heads", 3.into(), &["num_attention_heads", "(3) must divide hidden_size (16)"]),
        // transformers 5 would size q/k/v by it.
        ("head_dim", 4.into(), &["head_dim", "is 4", "= 8"]),
        // transformers trains these with MSE or BCE; train and eval compute cross-entropy.
        ("problem_type", "regression".into(), &["problem_type", "`regression`", "single_label_classification"]),
        ("problem_type", "multi_label_classification".into(), &["problem_type", "multi_label_classification"]),
        ("patch_size", 16.into(), &["patch_size", "(16) is larger than image_size (8)"]),
        ("hidden_size", "sixteen".into(), &["hidden_size", "must be a non-negative integer"]),
        ("hidden_size", (-16).into(), &["hidden_size", "-16"]),
        ("num_hidden_layers", 0.into(), &["num_hidden_layers", "between 1 and"]),
        ("layer_norm_eps", (-1.0).into(), &["layer_norm_eps", "positive"]),
        ("layer_norm_eps", 1e-50.into(), &["layer_norm_eps", "f32", "1e-50"]),
        ("layer_norm_eps", 1e50.into(), &["layer_norm_eps", "f32", "1e50"]),
        ("hidden_act", "relu".into(), &["hidden_act", "relu"]),
        // An explicit null is no value (transformers refuses it), not the default.
        ("hidden_act", serde_json::Value::Null, &["hidden_act", "is null"]),
        ("qkv_bias", serde_json::Value::Null, &["qkv_bias", "is null"]),
    ];
    for (key, value, culprits) in cases {
        std::fs::write(&config, &good).expect("restore");
        edit_json(&config, |v| v[key] = value);
        let line = fails(&eval, INPUT, culprits);
        assert!(line.contains("config.json"), "{line}");
    }
    std::fs::write(&config, &good).expect("restore");
    edit_json(&config, |v| v["problem_type"] = "single_label_classification".into());
    succeeds(&eval);
    // A one-label head (a regression head in transformers) is not trained by cross-entropy.
    std::fs::write(&config, &good).expect("restore");
    edit_json(&config, |v| {
        let v = v.as_object_mut().expect("object");
        v.remove("id2label");
        v.remove("label2id");
        v.insert("num_labels".into(), 1.into());
    });
    let weights = model.join("model.safetensors");
    let good_weights = std::fs::read(&weights).expect("weights");
    edit_tensors(&weights, |tensors| {
        // classifier.weight [5, 16] → [1, 16], classifier.bias [5] → [1]
        for (_, _, shape, bytes) in tensors.iter_mut().filter(|t| t.0.starts_with("classifier.")) {
            shape[0] = 1;
            bytes.truncate(bytes.len() / 5);
        }
    });
    let (lora, out) = (dir.join("lora.json"), dir.join("out"));
    std::fs::write(&lora, r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#).expect("lora config");
    let train = ["train", "--model", s(&model), "--adapter-config", s(&lora), "--data", s(&data), "--out", s(&out)];
    let line = fails(&train, INPUT, &["num_labels", "is 1", "cross-entropy over one class"]);
    assert!(line.contains("config.json"), "{line}");
    // Nor scored by accuracy, unless the config asks for single-label classification.
    let line = fails(&eval, INPUT, &["num_labels", "is 1", "problem_type", "regression"]);
    assert!(line.contains("config.json"), "{line}");
    // (which then reaches the labels: this data has five).
    edit_json(&config, |v| v["problem_type"] = "single_label_classification".into());
    fails(&eval, INPUT, &["labels[1]", "out of range", "1 labels"]);
    std::fs::write(&weights, good_weights).expect("restore weights");
    std::fs::write(&config, &good).expect("restore");
    edit_json(&config, |v| {
        v.as_object_mut().expect("object").remove("image_size");
    });
    // Left out, a size takes transformers' default (224), which these weights do not fit.
    fails(&eval, INPUT, &["config.json", "image_size = 224", "position_embeddings"]);
    std::fs::write(&config, b"{\"hidden_size\": 16,").expect("broken json");
    fails(&eval, INPUT, &["config.json", "invalid JSON", "line 1"]);
    std::fs::write(&config, b"[1, 2]").expect("not an object");
    fails(&eval, INPUT, &["config.json", "JSON object"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A value of megabytes quoted from a file (a key, a name) is cut to its start and end, so the
/// error stays one line of at most about a thousand characters.
#[test]
fn long_values_are_cut_in_error_lines() {
    let dir = scratch("long-values");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let cfg = dir.join("adapter_config.json");
    let out = dir.join("out");
    let train = ["train", "--model", s(&model), "--adapter-config", s(&cfg), "--data", s(&data), "--out", s(&out)];
    let long = "X".repeat(1_000_000);
    for value in [
        serde_json::json!({"peft_type": long}),
        serde_json::json!({"peft_type": "LORA", "r": 2, "target_modules": [&long], "lora_alpha": &long}),
    ] {
        std::fs::write(&cfg, value.to_string()).expect("config");
        let out = run(&train);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(INPUT), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {}", &stderr[..stderr.len().min(2000)]);
        assert!(lines[0].len() < 1100, "{} characters: {}", lines[0].len(), &lines[0][..2000.min(lines[0].len())]);
        assert!(lines[0].contains("adapter_config.json") && lines[0].contains("characters left out]"), "{}", lines[0]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_adapter_configs_are_named() {
    let dir = scratch("adapter-config");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let cfg = dir.join("adapter_config.json");
    let out = dir.join("out");
    let train = ["train", "--model", s(&model), "--adapter-config", s(&cfg), "--data", s(&data), "--out", s(&out)];
    let lora = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]});
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        (serde_json::json!({"r": 0}), &["`r`", "between 1 and"]),
        (serde_json::json!({"r": "four"}), &["`r`", "\"four\""]),
        (serde_json::json!({"r": 2.5}), &["`r`", "2.5"]),
        (serde_json::json!({"peft_type": "IA3"}), &["peft_type", "IA3"]),
        (serde_json::json!({"peft_type": 7}), &["peft_type", "must be a string"]),
        (
            serde_json::json!({"target_modules": ["nothing_like_this"]}),
            &["target_modules", "nothing_like_this", "matches no"],
        ),
        (serde_json::json!({"target_modules": 5}), &["target_modules", "must be a string"]),
        (serde_json::json!({"target_modules": "("}), &["target_modules", "regular expression"]),
        (serde_json::json!({"lora_dropout": 1.5}), &["lora_dropout", "1.5"]),
        (serde_json::json!({"lora_alpha": "big"}), &["lora_alpha", "must be a number"]),
        (serde_json::json!({"rank_pattern": {"query(": 2}}), &["rank_pattern", "query(", "regular expression"]),
        (serde_json::json!({"rank_pattern": {"query": 0}}), &["rank_pattern", "query", "rank between 1"]),
        // Nested repeats that never match: refused at once (before, every module path under
        // both namings spent ten million backtracking steps on it, a third of a second each).
        (serde_json::json!({"target_modules": "(?:(?=.)(.*)*)*Z"}), &["target_modules", "(a*)*", "backtracking steps"]),
        (
            serde_json::json!({"exclude_modules": "(?:(?=.)(.*)*)*Z"}),
            &["exclude_modules", "backtracking steps", "`vit.embeddings.patch_embeddings.projection`"],
        ),
        (serde_json::json!({"alpha_pattern": {"(?:(?=.)(.*)*)*Z": 3}}), &["alpha_pattern", "backtracking steps"]),
        (serde_json::json!({"layers_to_transform": [0, 11]}), &["layers_to_transform", "layer 11", "2 layers"]),
        (serde_json::json!({"modules_to_save": ["no_such_head"]}), &["modules_to_save", "no_such_head"]),
        (
            serde_json::json!({"modules_to_save": ["classifier", "clasifier_typo"]}),
            &["modules_to_save", "`clasifier_typo` matches no module"],
        ),
        (serde_json::json!({"modules_to_save": ["classifier", "dropout"]}), &["modules_to_save", "`dropout`"]),
        (serde_json::json!({"modules_to_save": ["classifier", ""]}), &["modules_to_save", "empty name"]),
        // PEFT would save `vit.layers.1` but still adapt inside it, and not load its own file.
        (serde_json::json!({"modules_to_save": ["ayers.1"]}), &["modules_to_save", "`ayers.1`", "`layers.1`"]),
        (serde_json::json!({"bias": "lora"}), &["bias", "lora", "\"lora_only\""]),
        // A list of thousands of names is shown by its first few.
        (
            serde_json::json!({"target_modules": (0..20_000).map(|i| format!("m{i}")).collect::<Vec<_>>()}),
            &["target_modules", "\"m7\", … 19992 more]"],
        ),
        (serde_json::json!({"use_dora": true}), &["use_dora", "DoRA"]),
        (serde_json::json!({"num_labels": 0}), &["num_labels", "between 1 and"]),
        (
            serde_json::json!({"num_labels": 1, "modules_to_save": ["classifier"]}),
            &["num_labels", "is 1", "cross-entropy over one class"],
        ),
    ];
    for (patch, culprits) in cases {
        let mut v = lora.clone();
        for (k, x) in patch.as_object().expect("patch") {
            v[k] = x.clone();
        }
        std::fs::write(&cfg, serde_json::to_string(&v).expect("json")).expect("write config");
        let line = fails(&train, INPUT, culprits);
        assert!(line.contains("adapter_config.json"), "{line}");
    }
    let others: Vec<(serde_json::Value, &[&str])> = vec![
        (serde_json::json!({"peft_type": "LORA", "target_modules": ["query"]}), &["`r`", "missing"]),
        (serde_json::json!({"peft_type": "MOPPA", "layers": [5]}), &["layers", "layer 5", "2 layers"]),
        (serde_json::json!({"peft_type": "MOPPA", "num_heads": 3}), &["num_heads", "(3) must divide"]),
        (serde_json::json!({"peft_type": "MOPPA", "entropy_decay_fraction": 0}), &["entropy_decay_fraction"]),
        (serde_json::json!({"peft_type": "RLP", "num_prompt_tokens": 0, "r": 2}), &["num_prompt_tokens"]),
        (serde_json::json!({"peft_type": "FLORA", "r": [2, 2, 2], "target_modules": ["query"]}), &["`r`", "3 ranks"]),
        (serde_json::json!({"peft_type": "FLORA", "r": [], "target_modules": ["query"]}), &["`r`", "must list ranks"]),
    ];
    for (v, culprits) in others {
        std::fs::write(&cfg, serde_json::to_string(&v).expect("json")).expect("write config");
        fails(&train, INPUT, culprits);
    }
    assert!(!out.exists(), "a failed run created --out");
    std::fs::remove_dir_all(&dir).ok();
}

/// Prompt tokens are bounded (65,536, as `num_prompt_tokens`): a merged model holding more
/// is refused naming `prompt_embeddings`, and an RLP adapter whose prompts with the model's
/// merged ones would pass the bound is refused naming `num_prompt_tokens`, before training.
#[test]
fn too_many_prompt_tokens_are_refused() {
    let dir = scratch("prompt-bound");
    let data = good_data(&dir);
    let merged = dir.join("merged");
    succeeds(&[
        "merge",
        "--model",
        s(&fixture("vit_tiny")),
        "--adapter",
        s(&fixture("adapters/rlp")),
        "--out",
        s(&merged),
    ]);
    let config = dir.join("rlp.json");
    let rlp = |tokens: usize| serde_json::json!({"peft_type": "RLP", "num_prompt_tokens": tokens, "r": 1, "modules_to_save": ["classifier"], "num_labels": 5});
    std::fs::write(&config, rlp(65_534).to_string()).unwrap();
    let args = ["train", "--model", s(&merged), "--adapter-config", s(&config), "--data", s(&data)];
    let out = dir.join("out");
    let line =
        fails(&[&args[..], &["--out", s(&out), "--steps", "1"]].concat(), INPUT, &["rlp.json", "num_prompt_tokens"]);
    assert!(line.contains("65534") && line.contains("3 merged prompt tokens") && line.contains("65536"), "{line}");
    assert!(!out.exists(), "nothing written");
    // A merged model with more prompts than the bound.
    edit_tensors(&merged.join("model.safetensors"), |t| {
        let p = t.iter_mut().find(|(k, ..)| k == "prompt_embeddings").expect("merged prompts");
        (p.2, p.3) = (vec![65_537, 16], vec![0; 65_537 * 16 * 4]);
    });
    let eval = ["eval", "--model", s(&merged), "--data", s(&data)];
    let line = fails(&eval, INPUT, &["model.safetensors", "prompt_embeddings", "1 ≤ n ≤ 65536", "[65537, 16]"]);
    assert!(!line.contains("panicked"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Data and numbers

#[test]
fn bad_data_is_named() {
    let dir = scratch("data");
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let rlp = fixture("adapters/rlp");
    let out = dir.join("out");
    let path = dir.join("bad.safetensors");
    let (m, l, p, o) = (s(&model), s(&lora), s(&path), s(&out));

    write_data(&path, [6, 3, 8, 8], &[0, 1, 2, 3, 9, 0]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["bad.safetensors", "`labels[4]` = 9", "5 labels"]);
    // The RLP adapter's own head has 3 labels: label 3 is out of its range.
    write_data(&path, [6, 3, 8, 8], &[0, 1, 2, 3, 0, 0]);
    fails(&train_args(m, s(&rlp), p, o, &[]), INPUT, &["`labels[3]` = 3", "3 labels"]);
    write_data(&path, [6, 3, 8, 8], &[0, 1, -2, 3, 0, 0]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["`labels[2]` = -2"]);
    // U64 labels beyond i64 are named with their own value.
    edit_tensors(&path, |tensors| {
        let labels = tensors.iter_mut().find(|t| t.0 == "labels").expect("labels");
        labels.1 = Dtype::U64;
        labels.3[16..24].copy_from_slice(&((1u64 << 63) + 5).to_le_bytes());
    });
    fails(&train_args(m, l, p, o, &[]), INPUT, &["`labels[2]` is 9223372036854775813"]);
    write_data(&path, [6, 3, 16, 16], &[0; 6]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["pixel_values", "3×8×8", "3×16×16"]);
    write_data(&path, [6, 1, 8, 8], &[0; 6]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["pixel_values", "1×8×8"]);
    write_data(&path, [6, 3, 8, 8], &[0; 5]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["labels", "[6]", "[5]"]);
    write_data(&path, [0, 3, 8, 8], &[]);
    fails(&train_args(m, l, p, o, &[]), INPUT, &["bad.safetensors", "no pixels"]);

    write_data(&path, [6, 3, 8, 8], &[0; 6]);
    edit_tensors(&path, |t| {
        let px = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        let i = 4 * (3 * 192 + 64 + 8 * 3 + 5); // image 3, channel 1, row 3, column 5
        px.3[i..i + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    fails(&train_args(m, l, p, o, &[]), INPUT, &["bad.safetensors", "image 3", "NaN", "channel 1, row 3, column 5"]);
    // An infinity written as such is named without the hint for F64 values beyond f32's
    // range, which a file of F64 pixels gets.
    write_data(&path, [6, 3, 8, 8], &[0; 6]);
    edit_tensors(&path, |t| {
        let px = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        px.3[4 * 192..4 * 193].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    let line = fails(&train_args(m, l, p, o, &[]), INPUT, &["bad.safetensors", "image 1", "inf"]);
    assert!(!line.contains("F64"), "{line}");
    edit_tensors(&path, |t| {
        let px = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        px.1 = Dtype::F64;
        let mut wide: Vec<u8> =
            px.3.chunks_exact(4)
                .flat_map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
        wide[8 * 192..8 * 193].copy_from_slice(&1e300f64.to_le_bytes());
        px.3 = wide;
    });
    fails(&train_args(m, l, p, o, &[]), INPUT, &["bad.safetensors", "image 1", "inf", "F64 values beyond f32's range"]);

    write_data(&path, [6, 3, 8, 8], &[0; 6]);
    edit_tensors(&path, |t| {
        let lb = t.iter_mut().find(|(k, ..)| k == "labels").expect("labels");
        lb.1 = Dtype::F64;
    });
    fails(&train_args(m, l, p, o, &[]), INPUT, &["labels", "F64", "integer tensor"]);
    edit_tensors(&path, |t| t.retain(|(k, ..)| k != "labels"));
    fails(&train_args(m, l, p, o, &[]), INPUT, &["no `labels`", "pixel_values"]);
    // A model file given as data.
    let weights = model.join("model.safetensors");
    fails(&train_args(m, l, s(&weights), o, &[]), INPUT, &["model.safetensors", "not a data set"]);
    assert!(!out.exists(), "a failed run created --out");
    std::fs::remove_dir_all(&dir).ok();
}

/// The tuning variables of the runtime take only the values they document: a typo is an error
/// naming the variable, not a silent fallback that benchmarks the default under another name.
#[test]
fn unknown_values_of_the_tuning_variables_are_named() {
    let dir = scratch("env");
    let data = good_data(&dir);
    let (model, moppa) = (fixture("vit_tiny"), fixture("adapters/moppa"));
    let eval = ["eval", "--model", s(&model), "--adapter", s(&moppa), "--data", s(&data)];
    let bad = [
        ("PEFT_WGPU_MATMUL", "tile"),
        ("PEFT_WGPU_FILTER", "fast"),
        ("PEFT_WGPU_SUBMIT_EVERY", "0"),
        ("PEFT_WGPU_KERNELS", "npu"),
        ("PEFT_WGPU_WAIT_SECONDS", "-5"),
        ("PEFT_WGPU_WAIT_SECONDS", "ten"),
    ];
    for (var, value) in bad {
        check_failure(&run_env(&eval, &[(var, value)]), USAGE, &[var, value], false);
    }
    // A value that is not UTF-8 is named too, not taken for an unset variable.
    #[cfg(unix)]
    for var in [
        "PEFT_WGPU_ADAPTER",
        "PEFT_WGPU_BACKEND",
        "PEFT_WGPU_KERNELS",
        "PEFT_WGPU_SUBMIT_EVERY",
        "PEFT_WGPU_WAIT_SECONDS",
    ] {
        use std::os::unix::ffi::OsStrExt;
        let value = std::ffi::OsStr::from_bytes(b"gpu\xff");
        check_failure(&run_env(&eval, &[(var, value)]), USAGE, &[var, "is `gpu\u{fffd}`"], false);
    }
    for (var, value) in [
        ("PEFT_WGPU_MATMUL", "Tiled64"),
        ("PEFT_WGPU_FILTER", "unfused"),
        ("PEFT_WGPU_SUBMIT_EVERY", "3"),
        ("PEFT_WGPU_KERNELS", "GPU"),
        ("PEFT_WGPU_WAIT_SECONDS", "0"),
        ("PEFT_WGPU_WAIT_SECONDS", " 120 "),
    ] {
        let out = run_env(&eval, &[(var, value)]);
        assert!(out.status.success(), "{var}={value}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Data through a pipe (`--data /dev/stdin`) is read like a file; a truncated stream is named
/// as such, and one that does not end where its tensors do is refused, not read forever.
#[cfg(target_os = "linux")]
#[test]
fn bad_numbers_are_refused_before_gpu_work() {
    let dir = scratch("numbers");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = dir.join("out");
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    let base = ["train", "--model", m, "--init", l, "--data", d, "--out", o];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    fails(&with(&["--batch-size", "0"]), USAGE, &["--batch-size", "at least 1"]);
    fails(&with(&["--steps", "0"]), USAGE, &["--steps", "at least 1"]);
    fails(&with(&["--epochs", "0"]), USAGE, &["--epochs", "positive"]);
    fails(&with(&["--epochs=-1.5"]), USAGE, &["--epochs", "-1.5"]);
    fails(&with(&["--epochs", "NaN"]), USAGE, &["--epochs", "NaN"]);
    fails(&with(&["--epochs", "1e30"]), USAGE, &["--epochs", "1e30 passes", "too many"]);
    fails(&with(&["--epochs", "1.79e308"]), USAGE, &["--epochs", "1.79e308 passes"]);
    fails(&with(&["--lr", "0"]), USAGE, &["--lr", "positive"]);
    fails(&with(&["--lr=-0.1"]), USAGE, &["--lr", "-0.1"]);
    fails(&with(&["--lr", "inf"]), USAGE, &["--lr", "inf"]);
    fails(&with(&["--lr", "NaN"]), USAGE, &["--lr", "NaN"]);
    fails(&with(&["--lr", "1e39"]), USAGE, &["--lr", "1e39", "f32"]);
    fails(&with(&["--weight-decay=-5"]), USAGE, &["--weight-decay", "-5"]);
    fails(&with(&["--optimizer", "sgd", "--weight-decay", "NaN"]), USAGE, &["--weight-decay", "NaN"]);
    fails(&with(&["--weight-decay", "1e300"]), USAGE, &["--weight-decay", "1e300", "f32"]);
    fails(&["eval", "--model", m, "--data", d, "--batch-size", "0"], USAGE, &["--batch-size"]);
    // Flag errors found by the parser: the same one-line form, naming the flag.
    fails(&["train", "--model", m], USAGE, &["required", "--data", "--out", "--adapter-config"]);
    fails(&with(&["--steps", "-3"]), USAGE, &["--steps", "-3", "negative", "at least 1"]);
    fails(&with(&["--batch-size", "1e3"]), USAGE, &["--batch-size", "1e3", "not a whole number"]);
    fails(&with(&["--seed", "-1"]), USAGE, &["--seed", "-1", "negative"]);
    fails(&with(&["--seed", "18446744073709551616"]), USAGE, &["--seed", "too large", "18446744073709551615"]);
    fails(&with(&["--steps", "-0"]), USAGE, &["--steps", "at least 1"]);
    // Beyond any integer type, too.
    let huge = "999999999999999999999999999999999999999999999";
    fails(&with(&["--batch-size", huge]), USAGE, &["--batch-size", "too large"]);
    fails(
        &with(&["--batch-size=-999999999999999999999999999999999999999999999"]),
        USAGE,
        &["--batch-size", "negative"],
    );
    fails(&with(&["--epochs", "half"]), USAGE, &["--epochs", "half"]);
    fails(&with(&["--bogus"]), USAGE, &["--bogus"]);
    fails(&with(&["--steps", "2", "--epochs", "1"]), USAGE, &["--steps", "--epochs"]);
    assert!(!out.exists(), "a failed run created --out");
    std::fs::remove_dir_all(&dir).ok();
}
