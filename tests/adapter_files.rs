//! Adapter folders (SPEC §9): `Adapter::save` then `Adapter::load` gives identical tensors,
//! config and outputs for every type, PEFT's own files survive a load and save unchanged in
//! their keys, and broken folders are errors naming the file and tensor.

mod common;
#[path = "support/adapters.rs"]
mod support;

use std::path::{Path, PathBuf};

use common::{assert_close, f64s, gpu, rel_err};
use peft_wgpu::adapters::{Adapter, CONFIG_FILE, WEIGHTS_FILE};
use peft_wgpu::io::safetensors::{self as st, HostTensor, TensorFile};
use peft_wgpu::nn::{ModuleId, Naming};
use peft_wgpu::{Error, Gpu};
use serde_json::json;
use support::{fixtures, logits, perturbed, pixels, tiny_vit};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("adapter_files").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every tensor (trainable, then frozen) as `(key, shape, values)`, keys in the
/// transformers-5 naming LoRA files are written in.
fn contents(gpu: &Gpu, a: &Adapter) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let all = a.trainable().iter().chain(a.frozen());
    all.map(|p| (transformers5(&p.key), p.tensor.shape().to_vec(), gpu.read(&p.tensor).unwrap())).collect()
}

/// `key` with an on-disk layer module path (`vit.encoder.layer.N.attention.attention.query`)
/// respelled in transformers 5's naming (`vit.layers.N.attention.q_proj`); MoPPA's per-layer
/// keys, which have no module, stay.
fn transformers5(key: &str) -> String {
    let modules = ModuleId::all(8);
    for m in modules {
        let old = format!("base_model.model.{}.", m.path(Naming::OnDisk));
        if let Some(rest) = key.strip_prefix(&old) {
            return format!("base_model.model.{}.{rest}", m.path(Naming::Transformers5));
        }
    }
    key.to_string()
}

/// Saves `a`, loads it back, and checks tensors, config, labels, summary and logits; saving
/// the loaded adapter writes the same bytes.
fn round_trip(gpu: &Gpu, name: &str, a: &Adapter) {
    let vit = tiny_vit(gpu);
    let dir = scratch(name);
    a.save(gpu, &dir).unwrap();
    let b = Adapter::load(gpu, &dir, &vit).unwrap_or_else(|e| panic!("{name}: reload failed: {e}"));
    assert_eq!(contents(gpu, &b), contents(gpu, a), "{name}: tensors after save and load");
    assert!(contents(gpu, a).iter().any(|(_, _, v)| v.iter().any(|&x| x != 0.0)), "{name}: all zero");
    let written = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    assert_eq!(b.config().to_json(), written, "{name}: the config read is the one written");
    if !name.contains("lora") {
        assert_eq!(b.config().to_json(), a.config().to_json(), "{name}: config");
    }
    assert_eq!((b.num_labels(), b.trainable_summary()), (a.num_labels(), a.trainable_summary()), "{name}");
    let x = pixels(3);
    assert_eq!(logits(gpu, &vit, Some(&b), &x), logits(gpu, &vit, Some(a), &x), "{name}: logits");
    let again = scratch(&format!("{name}_again"));
    b.save(gpu, &again).unwrap();
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
        assert!(read(&dir) == read(&again), "{name}: {file} differs after a second save");
    }
}

#[test]
fn every_adapter_type_round_trips() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cases = [
        (
            "lora_on_disk",
            json!({"peft_type": "LORA", "r": 3, "target_modules": ["query", "dense", "projection"],
                                "modules_to_save": ["classifier", "layernorm"], "use_rslora": true}),
        ),
        ("lora_v5", json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj", "fc2"], "num_labels": 4})),
        ("flora", json!({"peft_type": "FLORA", "r": [2, 3], "target_modules": ["key", "fc1"], "scale": 0.5})),
        ("flora_conv", json!({"peft_type": "FLORA", "r": 2, "target_modules": ["projection", "value"]})),
        (
            "moppa",
            json!({"peft_type": "MOPPA", "layers": [1], "num_heads": 4, "entropy_scale": 0.1,
                         "modules_to_save": ["classifier"]}),
        ),
        ("rlp", json!({"peft_type": "RLP", "num_prompt_tokens": 3, "r": 2, "scale": 0.7, "num_labels": 2})),
    ];
    for (name, cfg) in &cases {
        let a = perturbed(&gpu, &vit, cfg, 11, 0.2, &scratch(&format!("fresh_{name}_source")));
        round_trip(&gpu, &format!("fresh_{name}"), &a);
    }
    // The saved config keeps `num_labels`, so that given again to `train` it makes the same
    // head (PEFT's LoraConfig ignores the field, with a warning).
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch_path("fresh_lora_v5").join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(written["num_labels"], 4, "{written}");
}

#[test]
fn adapters_written_by_peft_and_by_the_torch_reference_round_trip() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    for name in ["lora_v4", "lora_v5", "flora", "moppa", "rlp"] {
        let src = fixtures().join("adapters").join(name);
        let a = Adapter::load(&gpu, &src, &vit).unwrap();
        round_trip(&gpu, name, &a);
        let keys = |dir: &Path| {
            let f = TensorFile::open(&dir.join(WEIGHTS_FILE)).unwrap();
            let mut k: Vec<String> = f.keys().map(str::to_string).collect();
            k.sort();
            k
        };
        // Every type keeps the naming of the file it came from: the PEFT that wrote a LoRA
        // file (0.17 under transformers 4 for `lora_v4`) reads that naming only.
        assert_eq!(keys(&scratch_path(name)), keys(&src), "{name}: file keys");
    }
    // Asked for, a LoRA adapter is saved in the other naming, its config spelled out in it.
    let v4 = Adapter::load(&gpu, &fixtures().join("adapters").join("lora_v4"), &vit).unwrap();
    assert_eq!(v4.lora_naming(), Naming::OnDisk);
    let mut v5 = v4;
    v5.set_lora_naming(Naming::Transformers5);
    round_trip(&gpu, "lora_v4_as_v5", &v5);
    let src = fixtures().join("adapters").join("lora_v4");
    let mut want: Vec<String> = TensorFile::open(&src.join(WEIGHTS_FILE)).unwrap().keys().map(transformers5).collect();
    want.sort();
    let mut got: Vec<String> = TensorFile::open(&scratch_path("lora_v4_as_v5").join(WEIGHTS_FILE))
        .unwrap()
        .keys()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, want, "lora_v4 saved in transformers 5's naming");
    let mut v4_again = Adapter::load(&gpu, &scratch_path("lora_v4_as_v5"), &vit).unwrap();
    assert_eq!(v4_again.lora_naming(), Naming::Transformers5);
    v4_again.set_lora_naming(Naming::OnDisk);
    round_trip(&gpu, "lora_v4_back", &v4_again);
    let back = |dir: &Path| {
        let mut k: Vec<String> =
            TensorFile::open(&dir.join(WEIGHTS_FILE)).unwrap().keys().map(str::to_string).collect();
        k.sort();
        k
    };
    assert_eq!(back(&scratch_path("lora_v4_back")), back(&src), "lora_v4 back in its own naming");
    let spelled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch_path("lora_v4_back").join(CONFIG_FILE)).unwrap()).unwrap();
    let targets = spelled["target_modules"].as_array().unwrap();
    assert!(
        targets.iter().all(|t| t.as_str().unwrap().starts_with("vit.encoder.layer.")),
        "targets spelled out in the on-disk naming: {spelled}"
    );
    // PEFT's extra config keys survive.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch_path("lora_v5").join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(written["peft_version"], "0.21.2");
    assert_eq!(written["target_modules"], json!(["q_proj", "fc1", "v_proj", "o_proj"]));
}

/// A copy of the PEFT fixture `name` with `extra` appended to its `target_modules`.
fn with_targets(name: &str, extra: &str, copy: &str) -> PathBuf {
    let src = fixtures().join("adapters").join(name);
    let dir = scratch(copy);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join(CONFIG_FILE)).unwrap()).unwrap();
    cfg["target_modules"].as_array_mut().unwrap().push(json!(extra));
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_string()).unwrap();
    dir
}

#[test]
fn a_target_named_only_in_the_naming_peft_did_not_use_is_left_out_as_peft_does() {
    // PEFT under transformers 5 given ["q_proj", …, "key"] adapts no `key` (that name exists
    // only on disk) and writes no tensors for it; the file must load as PEFT left it. The
    // same holds the other way round for a transformers-4 file and a transformers-5 name.
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let x = pixels(3);
    for (name, extra) in [("lora_v5", "key"), ("lora_v4", "k_proj")] {
        let plain = Adapter::load(&gpu, &fixtures().join("adapters").join(name), &vit).unwrap();
        let dir = with_targets(name, extra, &format!("{name}_plus_{extra}"));
        let a = Adapter::load(&gpu, &dir, &vit).unwrap_or_else(|e| panic!("{name} + {extra}: {e}"));
        assert_eq!(contents(&gpu, &a), contents(&gpu, &plain), "{name} + {extra}: tensors");
        assert_eq!(logits(&gpu, &vit, Some(&a), &x), logits(&gpu, &vit, Some(&plain), &x), "{name} + {extra}");
    }
    // A file with no layer tensors at all: PEFT under transformers 4 given
    // ["projection", "q_proj"] adapts only the patch embedding.
    let conv = json!({"peft_type": "LORA", "r": 2, "target_modules": ["projection"]});
    let plain = perturbed(&gpu, &vit, &conv, 5, 0.3, &scratch("conv_only_source"));
    let saved = scratch("conv_only");
    plain.save(&gpu, &saved).unwrap();
    let dir = scratch("conv_only_plus_q_proj");
    std::fs::create_dir_all(&dir).unwrap();
    let file = TensorFile::open(&saved.join(WEIGHTS_FILE)).unwrap();
    let tensors: Vec<(String, HostTensor)> = file.keys().map(|k| (k.to_string(), file.f32(k).unwrap())).collect();
    let list: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&dir.join(WEIGHTS_FILE), &list, None).unwrap();
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["projection", "q_proj"]});
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_string()).unwrap();
    let a = Adapter::load(&gpu, &dir, &vit).unwrap_or_else(|e| panic!("projection only: {e}"));
    assert_eq!(logits(&gpu, &vit, Some(&a), &x), logits(&gpu, &vit, Some(&plain), &x), "projection only");
    // An adapter PEFT trained from an EVA init loads as the LoRA it is.
    let dir = with_targets("lora_v5", "q_proj", "lora_v5_eva");
    let path = dir.join(CONFIG_FILE);
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["init_lora_weights"] = json!("eva");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let a = Adapter::load(&gpu, &dir, &vit).unwrap_or_else(|e| panic!("eva: {e}"));
    let plain = Adapter::load(&gpu, &fixtures().join("adapters/lora_v5"), &vit).unwrap();
    assert_eq!(logits(&gpu, &vit, Some(&a), &x), logits(&gpu, &vit, Some(&plain), &x), "eva");
    // A target in the file's own naming still needs its tensors.
    let dir = with_targets("lora_v4", "key", "lora_v4_plus_key");
    let e = Adapter::load(&gpu, &dir, &vit).expect_err("`key` has no tensors in a transformers-4 file");
    let want = "base_model.model.vit.encoder.layer.0.attention.attention.key.lora_A.weight";
    assert!(matches!(&e, Error::MissingTensor { key, .. } if key == want), "{e}");
    // Targets naming modules only in the other naming than the file's keys: the file holds
    // the tensors, so the error is the config's, naming both namings and a key it holds.
    for (fixture, target, held) in [
        ("lora_v5", "query", "base_model.model.vit.layers.0.attention.q_proj.lora_A.weight"),
        ("lora_v4", "q_proj", "base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight"),
    ] {
        let dir = with_config(fixture, &format!("{fixture}_named_{target}"), |c| c["target_modules"] = json!([target]));
        let e = Adapter::load(&gpu, &dir, &vit).expect_err("targets in the other naming than the keys");
        let text = e.to_string();
        assert!(matches!(&e, Error::Config { key, .. } if key == "target_modules"), "{fixture}: {e}");
        for part in [held, "transformers 4's naming", "transformers 5's naming", "not saved together"] {
            assert!(text.contains(part), "{fixture}: `{part}` not in: {text}");
        }
    }
}

/// A copy of PEFT fixture `name` with its config changed by `edit`.
fn with_config(name: &str, copy: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = with_targets(name, "q_proj", copy);
    let path = dir.join(CONFIG_FILE);
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
    dir
}

/// A file read with a config that leaves some of its modules out (an exclusion, a target in
/// the naming the file does not use) is refused naming a tensor of such a module, rather
/// than applying tensors PEFT would not load; an exclusion in the other naming excludes
/// nothing, as PEFT under the file's transformers sees no module by that name.
#[test]
fn tensors_of_modules_the_config_leaves_out_are_refused_by_name() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let v_proj = "base_model.model.vit.layers.0.attention.v_proj.lora_A.weight";
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 2] = [
        ("excluded", |c| c["exclude_modules"] = json!(["v_proj"])),
        ("other_naming", |c| {
            let targets = c["target_modules"].as_array_mut().unwrap();
            targets.retain(|t| t != "v_proj");
            targets.push(json!("value"));
        }),
    ];
    for (name, edit) in edits {
        let dir = with_config("lora_v5", &format!("lora_v5_{name}"), edit);
        let e = Adapter::load(&gpu, &dir, &vit).expect_err(name);
        let text = e.to_string();
        assert!(matches!(e, Error::Format { .. }) && text.contains(v_proj), "{name}: {text}");
    }
    let dir = with_config("lora_v5", "lora_v5_excluding_value", |c| c["exclude_modules"] = json!(["value"]));
    let a = Adapter::load(&gpu, &dir, &vit).unwrap();
    let plain = Adapter::load(&gpu, &fixtures().join("adapters/lora_v5"), &vit).unwrap();
    assert_eq!(contents(&gpu, &a), contents(&gpu, &plain), "an exclusion in the other naming");
    // … unless the file has no tensors for the module (as this crate wrote such a config
    // before it spelled them out): then it is left out.
    let dir = broken_from("lora_v5", "lora_v5_without_value", |t| t.retain(|(k, _)| !k.contains("v_proj")));
    let path = dir.join(CONFIG_FILE);
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["exclude_modules"] = json!(["value"]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let a = Adapter::load(&gpu, &dir, &vit).unwrap_or_else(|e| panic!("excluded without tensors: {e}"));
    assert!(a.trainable().iter().all(|p| !p.key.contains("v_proj")), "v_proj left out");
}

/// A config with `exclude_modules` or `layers_to_transform`, which this crate reads under
/// both namings, is saved with its modules spelled out, so PEFT under transformers 5 (which
/// reads them in its naming only) adapts what was trained.
#[test]
fn exclusions_and_layer_choices_are_saved_spelled_out() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cases = [
        (
            json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj", "fc1"],
                   "exclude_modules": ["layer.1.intermediate.dense"]}),
            vec!["vit.layers.0.attention.q_proj", "vit.layers.0.mlp.fc1", "vit.layers.1.attention.q_proj"],
        ),
        (
            json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "layers_to_transform": [1],
                   "layers_pattern": "layer"}),
            vec!["vit.layers.1.attention.q_proj"],
        ),
    ];
    for (i, (cfg, want)) in cases.iter().enumerate() {
        let a = perturbed(&gpu, &vit, cfg, 3, 0.2, &scratch(&format!("spelled_{i}_source")));
        let dir = scratch(&format!("spelled_{i}"));
        a.save(&gpu, &dir).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(written["target_modules"], json!(want), "{cfg}: {written}");
        for key in ["exclude_modules", "layers_to_transform", "layers_pattern"] {
            assert!(written[key].is_null(), "{cfg}: {key} is {}", written[key]);
        }
        round_trip(&gpu, &format!("spelled_{i}_again"), &a);
    }
}

/// An adapter written here names the architecture it was made for in its weights' metadata,
/// and loading it onto another one is refused by name even where every tensor would fit
/// (LoRA on `query` fits any head count of one width); PEFT's files, without the note, are
/// not checked.
#[test]
fn an_adapter_made_for_another_architecture_is_refused() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"]});
    let a = Adapter::new(&gpu, support::config(&cfg), Path::new("adapter_config.json"), &vit, 1).unwrap();
    let dir = scratch("made_for_two_heads");
    a.save(&gpu, &dir).unwrap();
    let mut weights = peft_wgpu::nn::VitWeights::load(&fixtures().join("vit_tiny")).unwrap();
    weights.config.num_attention_heads = 4;
    let four_heads = peft_wgpu::nn::Vit::from_weights(&gpu, &weights).unwrap();
    let e = Adapter::load(&gpu, &dir, &four_heads).expect_err("made for 2 heads");
    let text = e.to_string();
    assert!(matches!(e, Error::Format { .. }), "{text}");
    assert!(text.contains(WEIGHTS_FILE) && text.contains("heads 2 there, 4 here"), "{text}");
    Adapter::load(&gpu, &dir, &vit).expect("the model it was made for");
    Adapter::load(&gpu, &fixtures().join("adapters/lora_v5"), &four_heads).expect("a PEFT file has no note");
}

/// The folder `round_trip` saved `name` to.
fn scratch_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("adapter_files").join(name)
}

/// A copy of the LoRA fixture whose tensors are changed by `edit`.
fn broken(name: &str, edit: impl FnOnce(&mut Vec<(String, HostTensor)>)) -> PathBuf {
    broken_from("lora_v4", name, edit)
}

/// A copy of adapter fixture `fixture` whose tensors are changed by `edit`.
fn broken_from(fixture: &str, name: &str, edit: impl FnOnce(&mut Vec<(String, HostTensor)>)) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("adapters").join(fixture);
    std::fs::copy(src.join(CONFIG_FILE), dir.join(CONFIG_FILE)).unwrap();
    let file = TensorFile::open(&src.join(WEIGHTS_FILE)).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = file.keys().map(|k| (k.to_string(), file.f32(k).unwrap())).collect();
    edit(&mut tensors);
    let list: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    st::write(&dir.join(WEIGHTS_FILE), &list, None).unwrap();
    dir
}

#[test]
fn broken_folders_are_errors_naming_the_tensor() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let load = |dir: &Path| Adapter::load(&gpu, dir, &vit).expect_err("a broken adapter is refused");
    let a_key = "base_model.model.vit.encoder.layer.1.attention.attention.query.lora_A.weight";

    let dir = broken("missing", |t| t.retain(|(k, _)| k != a_key));
    let e = load(&dir);
    assert!(matches!(&e, Error::MissingTensor { key, .. } if key == a_key), "{e}");

    let dir = broken("extra", |t| t.push(("base_model.model.stray".into(), HostTensor::zeros(&[2]).unwrap())));
    let e = load(&dir);
    assert!(e.to_string().contains("base_model.model.stray"), "{e}");

    let dir = broken("misshaped", |t| {
        let (_, a) = t.iter_mut().find(|(k, _)| k == a_key).unwrap();
        *a = HostTensor::zeros(&[3, 16]).unwrap();
    });
    let e = load(&dir);
    assert!(
        matches!(&e, Error::AdapterShape { key, expected, got, .. }
            if key == a_key && got[..] == [3, 16] && expected[0] != 3),
        "{e}"
    );
    assert!(e.to_string().contains(&dir.join(WEIGHTS_FILE).display().to_string()), "names the file: {e}");
    assert!(e.to_string().contains("another model"), "the config beside the weights: {e}");

    let tau_key = "base_model.model.vit.encoder.layer.1.moppa.temperature";
    let dir = broken_from("moppa", "zero_temperature", |t| {
        let (_, tau) = t.iter_mut().find(|(k, _)| k == tau_key).expect("a temperature");
        tau.data[1] = 0.0;
    });
    let e = load(&dir);
    assert!(e.to_string().contains(tau_key) && e.to_string().contains("head 1"), "{e}");
    // A τ whose square underflows f32 leaves the router's gradient no finite value; one that
    // a logit divided by overflows f32 leaves it no finite route.
    let dir = broken_from("moppa", "tiny_temperature", |t| {
        let (_, tau) = t.iter_mut().find(|(k, _)| k == tau_key).expect("a temperature");
        tau.data[0] = -1e-20;
    });
    let e = load(&dir);
    assert!(e.to_string().contains(tau_key) && e.to_string().contains("head 0,"), "{e}");
    assert!(e.to_string().contains("its square") && e.to_string().contains("underflows"), "{e}");
    let logits_key = "base_model.model.vit.encoder.layer.1.moppa.router_logits";
    let dir = broken_from("moppa", "huge_route", |t| {
        let (_, tau) = t.iter_mut().find(|(k, _)| k == tau_key).expect("a temperature");
        tau.data[1] = 1e-10;
        let heads = tau.data.len();
        let (_, logits) = t.iter_mut().find(|(k, _)| k == logits_key).expect("router logits");
        logits.data[2 * heads + 1] = -1e30;
    });
    let e = load(&dir);
    assert!(e.to_string().contains(tau_key) && e.to_string().contains("head 1:"), "{e}");
    assert!(e.to_string().contains("-1e30") && e.to_string().contains("overflows"), "{e}");

    let dir = broken("no_config", |_| {});
    std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    assert!(load(&dir).to_string().contains(CONFIG_FILE));
    assert!(matches!(load(&scratch("not_there")), Error::Io { .. }));
}

/// A reader that read a folder's config and weights, then sees another save replace both,
/// builds the adapter it read (the pair is checked against the config as it was read, not as
/// the file is now).
#[test]
fn the_pair_is_checked_as_it_was_read_while_the_folder_is_saved_again() {
    use peft_wgpu::adapters::AdapterConfig;
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let dir = scratch("saved_again");
    let (config_path, weights_path) = (dir.join(CONFIG_FILE), dir.join(WEIGHTS_FILE));
    let lora = |alpha: u32| json!({"peft_type": "LORA", "r": 2, "lora_alpha": alpha, "target_modules": ["query"]});
    let first = perturbed(&gpu, &vit, &lora(4), 3, 0.3, &scratch("saved_again_first"));
    let second = perturbed(&gpu, &vit, &lora(16), 4, 0.3, &scratch("saved_again_second"));
    first.save(&gpu, &dir).unwrap();
    let (config, weights) = (AdapterConfig::read(&config_path).unwrap(), TensorFile::open(&weights_path).unwrap());
    second.save(&gpu, &dir).unwrap();
    let read = Adapter::from_file(&gpu, config, &config_path, &weights, &vit).expect("the pair as read");
    let x = pixels(2);
    assert_eq!(logits(&gpu, &vit, Some(&read), &x), logits(&gpu, &vit, Some(&first), &x), "the adapter read");
}

/// Overlapping `alpha_pattern` keys (`layers.1.mlp.fc1` and `fc1` both match layer 1's fc1;
/// PEFT takes the first but writes them sorted, so its own re-save would give that module
/// `fc1`'s alpha): the config is written with one key per module, each matching one module,
/// and reads back to the same alphas and outputs.
#[test]
fn overlapping_patterns_are_written_one_per_module() {
    let gpu = gpu();
    let cfg = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["fc1"],
                     "alpha_pattern": {"layers.1.mlp.fc1": 20, "fc1": 3}});
    let a = perturbed(&gpu, &tiny_vit(&gpu), &cfg, 5, 0.2, &scratch("overlap_source"));
    round_trip(&gpu, "overlap_lora", &a);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch_path("overlap_lora").join(CONFIG_FILE)).unwrap()).unwrap();
    let want = json!({"vit.layers.0.mlp.fc1": 3.0, "vit.layers.1.mlp.fc1": 20.0});
    assert_eq!(written["alpha_pattern"], want, "{written}");
    assert_eq!(written["target_modules"], json!(["vit.layers.0.mlp.fc1", "vit.layers.1.mlp.fc1"]), "{written}");
}

/// A file whose config has two `rank_pattern` keys matching one module, the first giving it
/// another rank than the file holds (as PEFT's own re-save of such a config reads back: it
/// sorts the keys), is refused naming the tensor and the overlap, not as an adapter for
/// another model.
#[test]
fn a_rank_from_overlapping_patterns_is_named_as_such() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]});
    let source = scratch("rank_overlap_source");
    perturbed(&gpu, &vit, &cfg, 3, 0.1, &source);
    let patterns = json!({"layers.1.attention.q_proj": 4, "q_proj": 2});
    let dir = edited_copy(&source, "rank_overlap", |c| c["rank_pattern"] = patterns.clone());
    let e = Adapter::load(&gpu, &dir, &vit).expect_err("rank 4 for a file of rank 2").to_string();
    assert!(e.contains("vit.layers.1.attention.q_proj.lora_A.weight` is shape [2, 16]"), "{e}");
    assert!(e.contains("two of its keys match `vit.layers.1.attention.q_proj`"), "{e}");
    // One key per module: the same mismatch is an adapter for another config.
    let dir = edited_copy(&source, "rank_other", |c| c["rank_pattern"] = json!({"layers.1.attention.q_proj": 4}));
    let e = Adapter::load(&gpu, &dir, &vit).expect_err("rank 4 for a file of rank 2").to_string();
    assert!(e.contains("another model") && !e.contains("two of its keys"), "{e}");
}

/// PEFT matches `rank_pattern` and `alpha_pattern` against the module paths of the model it
/// runs on: a file keyed in transformers 5's naming whose targets name a module in both
/// namings (as PEFT 0.21 writes `["query", "q_proj"]`) takes the pattern on `q_proj`; saved
/// in the on-disk naming, the config is spelled out so that PEFT there reads the same alpha.
#[test]
fn patterns_match_the_naming_of_the_keys() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
                     "alpha_pattern": {"q_proj": 6}});
    let source = scratch("pattern_naming_source");
    let a = perturbed(&gpu, &vit, &cfg, 7, 0.3, &source);
    let images = pixels(3);
    let want = f64s(&logits(&gpu, &vit, Some(&a), &images));
    let plain = edited_copy(&source, "pattern_naming_plain", |c| c["alpha_pattern"] = json!({}));
    let plain = Adapter::load(&gpu, &plain, &vit).unwrap();
    assert!(rel_err(&logits(&gpu, &vit, Some(&plain), &images), &want) > 1e-3, "alpha 4 and 6 give other outputs");
    for targets in [json!(["query", "q_proj"]), json!(["q_proj", "query"])] {
        let dir = edited_copy(&source, "pattern_naming_both", |c| c["target_modules"] = targets.clone());
        let mut both = Adapter::load(&gpu, &dir, &vit).unwrap();
        assert_close(&format!("{targets}"), &logits(&gpu, &vit, Some(&both), &images), &want, 1e-6, 1e-7);
        both.set_lora_naming(Naming::OnDisk);
        let saved = scratch("pattern_naming_on_disk");
        both.save(&gpu, &saved).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(saved.join(CONFIG_FILE)).unwrap()).unwrap();
        for layer in 0..2 {
            let q = format!("vit.encoder.layer.{layer}.attention.attention.query");
            assert_eq!(written["alpha_pattern"][&q], json!(6.0), "{targets}: {written}");
        }
        let again = Adapter::load(&gpu, &saved, &vit).unwrap();
        assert_close(&format!("{targets} saved again"), &logits(&gpu, &vit, Some(&again), &images), &want, 1e-6, 1e-7);
    }
}

/// A new adapter whose targets name its modules in both namings takes transformers 5's paths
/// for its patterns; saved in the on-disk naming (`PEFT_WGPU_LORA_NAMING=transformers4`),
/// where the pattern names nothing, its config is spelled out with the ranks it has.
#[test]
fn a_new_adapter_saved_in_the_other_naming_keeps_its_pattern_ranks() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let cfg =
        json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "q_proj"], "rank_pattern": {"q_proj": 4}});
    let mut a = Adapter::new(&gpu, support::config(&cfg), Path::new("adapter_config.json"), &vit, 3).unwrap();
    a.set_lora_naming(Naming::OnDisk);
    let dir = scratch("pattern_new_on_disk");
    a.save(&gpu, &dir).unwrap();
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    let q = "vit.encoder.layer.0.attention.attention.query";
    assert_eq!(written["rank_pattern"][q], json!(4), "{written}");
    let back = Adapter::load(&gpu, &dir, &vit).expect("the saved adapter loads");
    let ranks: Vec<usize> = back
        .trainable()
        .iter()
        .map(|p| if p.key.ends_with("lora_A.weight") { p.tensor.shape()[0] } else { p.tensor.shape()[1] })
        .collect();
    assert_eq!(ranks, [4; 4], "A and B of both layers' query");
}

/// A PEFT 0.21 adapter saved in the on-disk naming, for PEFT 0.17, leaves out the fields PEFT
/// 0.18 added where they hold nothing, and `peft_version` (PEFT 0.17 warns of each field it
/// does not know); saved in its own naming it keeps them.
#[test]
fn fields_newer_than_peft_0_17_are_left_out_for_the_on_disk_naming() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let mut a = Adapter::load(&gpu, &fixtures().join("adapters/lora_v5"), &vit).unwrap();
    let newer = ["peft_version", "arrow_config", "use_bdlora", "ensure_weight_tying", "alora_invocation_tokens"];
    let written = |a: &Adapter, name: &str| -> serde_json::Value {
        let dir = scratch(name);
        a.save(&gpu, &dir).unwrap();
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap()
    };
    let own = written(&a, "newer_fields_own");
    assert!(newer.iter().all(|k| own.get(k).is_some()), "kept in its own naming: {own}");
    a.set_lora_naming(Naming::OnDisk);
    let old = written(&a, "newer_fields_on_disk");
    for key in newer {
        assert!(old.get(key).is_none(), "{key} written for PEFT 0.17: {old}");
    }
    let back = Adapter::load(&gpu, &scratch_path("newer_fields_on_disk"), &vit).unwrap();
    let images = pixels(2);
    assert_close(
        "read back",
        &logits(&gpu, &vit, Some(&back), &images),
        &f64s(&logits(&gpu, &vit, Some(&a), &images)),
        1e-6,
        1e-7,
    );
}

/// A copy of adapter folder `from` named `name`, its config changed by `edit`.
fn edited_copy(from: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(from.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(from.join(CONFIG_FILE)).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_string()).unwrap();
    dir
}

/// A save killed between its two renames leaves the new config under its temporary name;
/// where the reader cannot finish the save (a read-only folder), the adapter is refused,
/// naming that temporary, rather than read with the older config in place. Finished, the
/// pair loads.
#[test]
fn an_unfinished_interrupted_save_is_refused_naming_the_waiting_config() {
    let gpu = gpu();
    let vit = tiny_vit(&gpu);
    let dir = scratch("unfinished_save");
    let cfg = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value"]});
    // Saved by this crate, so the weights carry their config's fingerprint.
    perturbed(&gpu, &vit, &cfg, 11, 0.2, &scratch("unfinished_save_source")).save(&gpu, &dir).unwrap();
    let config_path = dir.join(CONFIG_FILE);
    let saved = std::fs::read(&config_path).unwrap();
    let older = String::from_utf8(saved.clone()).unwrap().replace("\"lora_alpha\": 4", "\"lora_alpha\": 8");
    assert_ne!(older.as_bytes(), saved.as_slice(), "the saved config changed shape");
    // What the kill leaves: the older config in place, the saved one waiting.
    let waiting = dir.join(format!(".{CONFIG_FILE}.tmp-4242"));
    std::fs::write(&waiting, &saved).unwrap();
    std::fs::write(&config_path, &older).unwrap();
    let check = || {
        let weights = TensorFile::open(&dir.join(WEIGHTS_FILE)).unwrap();
        let config = peft_wgpu::adapters::AdapterConfig::read(&config_path).unwrap();
        Adapter::check(config, &config_path, Some(&weights), vit.config())
    };
    let e = check().expect_err("the older config beside the newer weights");
    let text = e.to_string();
    assert!(text.contains("interrupted") && text.contains(".adapter_config.json.tmp-4242"), "{text}");
    // A temporary of another config is no reason to refuse: the config in place is read.
    std::fs::write(&waiting, b"{\"peft_type\": \"LORA\"}").unwrap();
    check().expect("a config edited by hand beside an unrelated leftover");
    // Finished by a reader, the saved pair is whole again.
    std::fs::write(&waiting, &saved).unwrap();
    peft_wgpu::adapters::finish_interrupted_save(&dir);
    assert_eq!(std::fs::read(&config_path).unwrap(), saved);
    assert!(!waiting.exists());
    check().expect("the finished pair");
}
