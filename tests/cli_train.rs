//! Training through the binary: `--no-shuffle` SGD steps of every adapter equal PyTorch's
//! (`scripts/fixtures_training.py`), and train → eval → merge → eval agree.

mod cli_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_close, fixture};
use peft_wgpu::io::TensorFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-wgpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu")).args(args).output().expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "peft-wgpu {args:?} failed ({}): {stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train_no_shuffle(name: &str) {
    let expected = fixture("training_expected.safetensors");
    let out = temp_dir(&format!("train-{name}"));
    let model = fixtures().join("vit_tiny");
    let init = fixtures().join("adapters").join(name);
    let data = fixtures().join("train_data.safetensors");
    let [steps, batch] = expected.ints("steps")[..] else { panic!("steps fixture") };
    let lr = expected.f64("lr")[0];
    run(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--lr",
        &lr.to_string(),
        "--optimizer",
        "sgd",
        "--no-shuffle",
    ]);
    let saved = TensorFile::open(&out.join("adapter_model.safetensors")).expect("saved adapter");
    let prefix = format!("{name}.final.");
    let keys: Vec<String> = expected.keys().into_iter().filter(|k| k.starts_with(&prefix)).collect();
    assert!(!keys.is_empty());
    for key in &keys {
        let file_key = &key[prefix.len()..];
        let got = saved.f32(file_key).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(&format!("{name}: {file_key}"), &got.data, &expected.f64(key), 2e-5, 1e-6);
    }
    assert_eq!(saved.keys().count(), keys.len(), "{name}: the saved adapter has other tensors than PyTorch's");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn no_shuffle_sgd_matches_pytorch_for_flora() {
    train_no_shuffle("flora");
}

#[test]
fn no_shuffle_sgd_matches_pytorch_for_moppa() {
    train_no_shuffle("moppa");
}

#[test]
fn no_shuffle_sgd_matches_pytorch_for_rlp() {
    train_no_shuffle("rlp");
}

#[test]
fn no_shuffle_sgd_matches_peft_for_lora() {
    train_no_shuffle("lora_v5");
}

/// Saved modules that hold others (`mlp`, `vit.embeddings`) train in full, as in PEFT.
#[test]
fn no_shuffle_sgd_matches_peft_for_lora_with_saved_containers() {
    train_no_shuffle("lora_saved_containers");
}

#[test]
fn train_eval_merge_eval_agree() {
    let dir = temp_dir("pipeline");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lora.json");
    std::fs::write(
        &config,
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value", "projection"],
            "modules_to_save": ["classifier"], "num_labels": 3}"#,
    )
    .unwrap();
    let model = fixtures().join("vit_tiny");
    let data = fixtures().join("train_data.safetensors");
    let (adapter, merged) = (dir.join("adapter"), dir.join("merged"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = run(&[
        "train",
        "--model",
        &s(&model),
        "--adapter-config",
        &s(&config),
        "--data",
        &s(&data),
        "--out",
        &s(&adapter),
        "--steps",
        "6",
        "--batch-size",
        "5",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--eval-data",
        &s(&data),
    ]);
    assert!(out.contains("eval accuracy"), "{out}");
    let (l1, l2) = (dir.join("adapter_logits.safetensors"), dir.join("merged_logits.safetensors"));
    let e1 =
        run(&["eval", "--model", &s(&model), "--adapter", &s(&adapter), "--data", &s(&data), "--logits-out", &s(&l1)]);
    // --eval-data reports what `eval` of the saved adapter does, line for line.
    for line in e1.lines() {
        assert!(out.contains(&format!("eval {line}\n")), "`eval {line}` in:\n{out}");
    }
    run(&["merge", "--model", &s(&model), "--adapter", &s(&adapter), "--out", &s(&merged)]);
    let e2 = run(&["eval", "--model", &s(&merged), "--data", &s(&data), "--logits-out", &s(&l2)]);
    let a = TensorFile::open(&l1).unwrap().f32("logits").unwrap();
    let b = TensorFile::open(&l2).unwrap().f32("logits").unwrap();
    assert_eq!(a.shape, [10, 3]);
    assert_eq!(b.shape, a.shape);
    assert_close(
        "merged vs adapter logits",
        &b.data,
        &a.data.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        1e-5,
        1e-6,
    );
    let acc = |s: &str| s.lines().find(|l| l.starts_with("accuracy")).map(str::to_string);
    assert_eq!(acc(&e1), acc(&e2), "eval outputs differ:\n{e1}\n{e2}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The merged model's config.json is the base model's with the adapter's labels (fields this
/// crate does not read are kept), and `merge --force` over a sharded model leaves one model.
#[test]
fn merge_keeps_the_model_config_and_replaces_a_sharded_model() {
    let dir = temp_dir("merge-config");
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).expect("model folder");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("vit_tiny").join(f), model.join(f)).expect("copy model");
    }
    let config_path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config")).expect("json");
    config["custom_field"] = serde_json::json!({"kept": true});
    config["encoder_stride"] = serde_json::json!(16);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
    // The output folder holds a sharded model, replaced with --force.
    let out = dir.join("out");
    let sharded = fixtures().join("vit_tiny_sharded");
    std::fs::create_dir_all(&out).expect("out");
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(&sharded).expect("sharded fixture").flatten() {
        std::fs::copy(entry.path(), out.join(entry.file_name())).expect("copy shard");
        shards.push(entry.file_name());
    }
    let adapter = fixtures().join("adapters/lora_v4");
    run(&["merge", "--model", &s(&model), "--adapter", &s(&adapter), "--out", &s(&out), "--force"]);
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("merged config")).expect("json");
    assert_eq!(merged["custom_field"], serde_json::json!({"kept": true}), "custom field lost: {merged}");
    assert_eq!(merged["encoder_stride"], 16, "field lost: {merged}");
    let labels = merged["id2label"].as_object().expect("id2label").len();
    let adapter_labels = 5; // lora_v4 saves a classifier for 5 labels
    assert_eq!(labels, adapter_labels, "labels of the merged head: {merged}");
    let mut left: Vec<String> =
        std::fs::read_dir(&out).expect("out").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["config.json", "model.safetensors"], "the old shards were left beside the merged model");
    // A merge killed after its renames but before it removed the shards: the next reader
    // removes them (the index would lead other tools to the old model).
    for entry in
        std::fs::read_dir(&sharded).expect("sharded fixture").flatten().filter(|e| e.file_name() != "config.json")
    {
        std::fs::copy(entry.path(), out.join(entry.file_name())).expect("copy shard");
    }
    let weights = std::fs::read(out.join("model.safetensors")).expect("merged weights");
    run(&["eval", "--model", &s(&out), "--data", &s(&fixtures().join("train_data.safetensors"))]);
    let mut left: Vec<String> =
        std::fs::read_dir(&out).expect("out").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["config.json", "model.safetensors"], "the old shards beside a whole merged model");
    assert_eq!(std::fs::read(out.join("model.safetensors")).expect("weights"), weights);
    // A model folder that holds both but was not saved by this crate is read as it is.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).expect("plain");
    for entry in std::fs::read_dir(&sharded).expect("sharded fixture").flatten() {
        std::fs::copy(entry.path(), plain.join(entry.file_name())).expect("copy shard");
    }
    std::fs::copy(fixtures().join("vit_tiny/model.safetensors"), plain.join("model.safetensors")).expect("copy");
    let before = std::fs::read_dir(&plain).expect("plain").count();
    run(&["eval", "--model", &s(&plain), "--data", &s(&fixtures().join("train_data.safetensors"))]);
    assert_eq!(std::fs::read_dir(&plain).expect("plain").count(), before, "a folder not ours was changed");
    std::fs::remove_dir_all(&dir).ok();
}

/// On the 9×14 ViT of 2×4 patches (a 4×3 grid, the last pixel row and two columns dropped):
/// a fresh MoPPA trains, saves K of shape `[4, 3, heads]` and evaluates; 8×8 images and the
/// square model's MoPPA are refused by name.
#[test]
fn moppa_trains_and_evaluates_on_an_oblong_grid() {
    use cli_support::{INPUT, fails, write_data};
    let dir = temp_dir("wide");
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let data = dir.join("data.safetensors");
    write_data(&data, [4, 3, 9, 14], &[0, 3, 1, 4]);
    let config = dir.join("moppa.json");
    std::fs::write(&config, r#"{"peft_type": "MOPPA", "entropy_scale": 0.1, "modules_to_save": ["classifier"]}"#)
        .unwrap();
    let adapter = dir.join("adapter");
    let (m, d, c, a) = (s(&fixtures().join("vit_wide")), s(&data), s(&config), s(&adapter));
    run(&[
        "train",
        "--model",
        &m,
        "--adapter-config",
        &c,
        "--data",
        &d,
        "--out",
        &a,
        "--steps",
        "3",
        "--batch-size",
        "2",
    ]);
    let saved = TensorFile::open(&adapter.join("adapter_model.safetensors")).unwrap();
    assert_eq!(saved.f32("base_model.model.vit.encoder.moppa.k_wave").unwrap().shape, [4, 3, 2]);
    let out = run(&["eval", "--model", &m, "--adapter", &a, "--data", &d]);
    assert!(out.contains("accuracy"), "{out}");

    let square = dir.join("square.safetensors");
    write_data(&square, [2, 3, 8, 8], &[1, 2]);
    fails(&["eval", "--model", &m, "--adapter", &a, "--data", &s(&square)], INPUT, &["pixel_values", "3×9×14"]);
    let tiny_moppa = s(&fixtures().join("adapters/moppa"));
    fails(&["eval", "--model", &m, "--adapter", &tiny_moppa, "--data", &d], INPUT, &["k_heat", "[4, 3, 2]"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The README's "first steps with the command line": the demo's task written as CLI files
/// (what `examples/export_digits.rs` does), LoRA trained on the committed model, evaluated,
/// merged and evaluated again (fewer steps than the README's run, so it is quick).
#[test]
fn the_readme_first_steps_run_on_the_committed_model() {
    use cli_support::s;
    use peft_wgpu::demo::digits::{Part, Task, split};
    use peft_wgpu::io::Dataset;
    let dir = temp_dir("first-steps");
    let written = peft_wgpu::demo::write_task_files(&dir).unwrap();
    let names: Vec<String> = written.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
    let expected = ["train.safetensors", "test.safetensors", "moppa.json", "flora.json", "lora.json", "rlp.json"];
    assert_eq!(names, expected);
    let (train, test, config) = (dir.join("train.safetensors"), dir.join("test.safetensors"), dir.join("lora.json"));
    // The saved files read back as they were.
    let test_set = split(Task::FineTune, Part::HeldOut).unwrap();
    let reread = Dataset::load(&test).unwrap();
    assert_eq!((reread.shape, &reread.labels, &reread.pixels), (test_set.shape, &test_set.labels, &test_set.pixels));
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits_vit");
    let (adapter, merged) = (dir.join("my-lora"), dir.join("my-merged"));
    let (m, c, tr, te, a, mm) = (s(&model), s(&config), s(&train), s(&test), s(&adapter), s(&merged));
    let args = ["train", "--model", m, "--adapter-config", c, "--data", tr, "--eval-data", te, "--out", a];
    run(&[&args[..], &["--steps", "60", "--batch-size", "16", "--lr", "3e-3"]].concat());
    let accuracy = |out: &str| -> f64 {
        let field = out.split_whitespace().skip_while(|w| *w != "accuracy:").nth(1).expect("an accuracy line");
        field.parse().expect("a number")
    };
    let with_adapter = run(&["eval", "--model", m, "--adapter", a, "--data", te]);
    // Five classes: chance is 0.2; 60 steps of LoRA on the pretrained model reach far more.
    assert!(accuracy(&with_adapter) > 0.6, "{with_adapter}");
    // A batch larger than the data set repeats images, which the run says.
    let big = dir.join("big-batch");
    let args = ["train", "--model", m, "--adapter-config", c, "--data", te, "--out", s(&big), "--steps", "1"];
    let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args([&args[..], &["--batch-size", "500"]].concat())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("--batch-size 500 is more than the 177 images"), "{stderr}");
    // Training on from the adapter with the config it was made from: its on-disk names
    // (`query`) find the tensors saved under transformers 5's (`q_proj`); a config of
    // another rank is refused naming the tensor's shape.
    let more = dir.join("more");
    let args = ["train", "--model", m, "--init", a, "--adapter-config", c, "--data", tr, "--out", s(&more)];
    run(&[&args[..], &["--steps", "1"]].concat());
    // What it saves is read back: the on-disk targets are spelled out in the naming of the
    // keys, as PEFT under transformers 5 needs them.
    run(&["eval", "--model", m, "--adapter", s(&more), "--data", te]);
    let saved = std::fs::read_to_string(more.join("adapter_config.json")).unwrap();
    assert!(saved.contains("\"vit.layers.1.attention.v_proj\"") && !saved.contains("\"query\""), "{saved}");
    // A pattern key that matches no adapted module changes nothing, which a note says.
    let typo = dir.join("typo");
    std::fs::create_dir_all(&typo).unwrap();
    std::fs::copy(more.join("adapter_model.safetensors"), typo.join("adapter_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(more.join("adapter_config.json")).unwrap()).unwrap();
    cfg["rank_pattern"] = serde_json::json!({"qurey": 3});
    std::fs::write(typo.join("adapter_config.json"), cfg.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .args(["eval", "--model", m, "--adapter", s(&typo), "--data", te])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("rank_pattern key `qurey` matches no adapted module"), "{stderr}");
    // A config that adapts a module the started-from adapter has no tensors for is refused
    // naming it, rather than passed over.
    let with_key = dir.join("with-key.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["target_modules"] = serde_json::json!(["query", "key", "value"]);
    std::fs::write(&with_key, cfg.to_string()).unwrap();
    let args = ["train", "--model", m, "--init", a, "--adapter-config", s(&with_key), "--data", tr, "--out", s(&more)];
    let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu")).args([&args[..], &["--force"]].concat()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("target_modules") && stderr.contains("attention.key`") && stderr.contains("no tensors"),
        "{stderr}"
    );
    let rank8 = dir.join("rank8.json");
    std::fs::write(&rank8, std::fs::read_to_string(&config).unwrap().replace("\"r\": 4", "\"r\": 8")).unwrap();
    let args = ["train", "--model", m, "--init", a, "--adapter-config", s(&rank8), "--data", tr, "--out", s(&more)];
    let out = Command::new(env!("CARGO_BIN_EXE_peft-wgpu")).args([&args[..], &["--force"]].concat()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("q_proj.lora_A.weight") && stderr.contains("expected [8, 32]"), "{stderr}");
    run(&["merge", "--model", m, "--adapter", a, "--out", mm]);
    let from_merged = run(&["eval", "--model", mm, "--data", te]);
    // Folding s·BA into W rounds differently: at most one borderline image may flip.
    let one_image = 1.0 / test_set.len() as f64;
    let gap = (accuracy(&from_merged) - accuracy(&with_adapter)).abs();
    assert!(gap <= one_image + 1e-9, "merged {from_merged} vs adapter {with_adapter}");
    std::fs::remove_dir_all(&dir).ok();
}

/// An RLP adapter folder in merged form (`prompt_embeddings` alone, SPEC §9): `eval` gives
/// what the merged model gives, `merge` writes those prompts unchanged, and `train --init`
/// continues from them as `P₀` with `A` drawn from `--seed`, saving the unmerged form.
#[test]
fn an_rlp_adapter_in_merged_form_evaluates_merges_and_trains() {
    use cli_support::{read_tensors, write_data, write_tensors};
    let dir = temp_dir("rlp-merged-form");
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model, unmerged) = (fixtures().join("vit_tiny"), fixtures().join("adapters/rlp"));
    let data = dir.join("data.safetensors");
    write_data(&data, [6, 3, 8, 8], &[0, 1, 2, 0, 1, 2]);
    let merged_model = dir.join("merged-model");
    run(&["merge", "--model", &s(&model), "--adapter", &s(&unmerged), "--out", &s(&merged_model)]);
    let tensor = |file: &Path, key: &str| {
        read_tensors(file).into_iter().find(|t| t.0 == key).unwrap_or_else(|| panic!("{key} in {file:?}"))
    };
    let prompts = tensor(&merged_model.join("model.safetensors"), "prompt_embeddings");

    // The merged form: the fixture's saved classifier and the merged prompts.
    let form = dir.join("merged-form");
    std::fs::create_dir_all(&form).unwrap();
    std::fs::copy(unmerged.join("adapter_config.json"), form.join("adapter_config.json")).unwrap();
    let mut tensors: Vec<_> = read_tensors(&unmerged.join("adapter_model.safetensors"))
        .into_iter()
        .filter(|t| !t.0.starts_with("rlp."))
        .collect();
    tensors.push(prompts.clone());
    let refs: Vec<_> = tensors.iter().map(|(k, d, shape, b)| (k.as_str(), *d, shape.clone(), b.clone())).collect();
    write_tensors(&form.join("adapter_model.safetensors"), &refs);

    let (m, d, f) = (s(&model), s(&data), s(&form));
    let from_form = run(&["eval", "--model", &m, "--adapter", &f, "--data", &d]);
    let from_model = run(&["eval", "--model", &s(&merged_model), "--data", &d]);
    assert_eq!(from_form, from_model, "the merged form evaluates as the merged model");
    let again = dir.join("merged-again");
    run(&["merge", "--model", &m, "--adapter", &f, "--out", &s(&again)]);
    assert_eq!(tensor(&again.join("model.safetensors"), "prompt_embeddings"), prompts, "merge keeps P");

    let trained = |seed: &str| {
        let out = dir.join(format!("trained-{seed}"));
        run(&["train", "--model", &m, "--init", &f, "--data", &d, "--out", &s(&out), "--steps", "2", "--seed", seed]);
        let file = out.join("adapter_model.safetensors");
        assert!(read_tensors(&file).iter().all(|t| t.0 != "prompt_embeddings"), "saved in unmerged form");
        let p0 = tensor(&file, "rlp.prompt_init");
        assert_eq!((p0.2, p0.3), (prompts.2.clone(), prompts.3.clone()), "P₀ is the merged P");
        let b = tensor(&file, "rlp.B").3;
        assert!(b.chunks(4).any(|v| f32::from_le_bytes(v.try_into().unwrap()) != 0.0), "B moved");
        tensor(&file, "rlp.A").3
    };
    assert_ne!(trained("1"), trained("2"), "A is drawn from --seed");
    std::fs::remove_dir_all(&dir).ok();
}
