//! `adapter_config.json` (`adapters::config`): required keys, wrong types, unknown keys,
//! PEFT's `rank_pattern`/`alpha_pattern`, `layers_to_transform` and `exclude_modules`
//! semantics, rsLoRA scaling, and targets that match nothing.

mod common;
#[path = "support/adapters.rs"]
mod support;

use std::path::Path;

use common::gpu;
use peft_wgpu::Error;
use peft_wgpu::adapters::{Adapter, AdapterConfig, AdapterKind, FloraRank, LoraConfig};
use peft_wgpu::io::json::JsonFile;
use serde_json::{Value, json};

fn parse(value: &Value) -> peft_wgpu::Result<AdapterConfig> {
    AdapterConfig::from_json(&JsonFile::parse(Path::new("cfg/adapter_config.json"), value.to_string().as_bytes())?)
}

/// Asserts that `value` is rejected with a config error on `key` that names the key.
fn rejects(value: &Value, key: &str) {
    match parse(value) {
        Err(e @ Error::Config { .. }) => {
            let Error::Config { key: got, path, .. } = &e else { unreachable!() };
            assert_eq!(got, key, "{value}: error on `{got}`, expected `{key}`: {e}");
            assert_eq!(path, Path::new("cfg/adapter_config.json"));
            assert!(e.to_string().contains(&format!("`{key}`")), "the message names `{key}`: {e}");
        }
        Err(e) => panic!("{value}: expected a config error on `{key}`, got {e}"),
        Ok(_) => panic!("{value}: accepted, expected an error on `{key}`"),
    }
}

fn lora(value: &Value) -> LoraConfig {
    match parse(value).unwrap().kind {
        AdapterKind::Lora(c) => c,
        other => panic!("not LoRA: {other:?}"),
    }
}

fn minimal() -> [(Value, &'static [&'static str]); 4] {
    [
        (json!({"peft_type": "LORA", "r": 4, "target_modules": ["query"]}), &["peft_type", "r", "target_modules"]),
        (json!({"peft_type": "FLORA", "r": 2, "target_modules": ["query"]}), &["peft_type", "r", "target_modules"]),
        (json!({"peft_type": "MOPPA"}), &["peft_type"]),
        (json!({"peft_type": "RLP", "num_prompt_tokens": 4, "r": 2}), &["peft_type", "num_prompt_tokens", "r"]),
    ]
}

#[test]
fn each_required_key_missing_is_an_error_naming_it() {
    for (cfg, required) in minimal() {
        assert!(parse(&cfg).is_ok(), "{cfg}");
        for &key in required {
            let mut c = cfg.clone();
            c.as_object_mut().unwrap().remove(key);
            rejects(&c, key);
            // null counts as missing, as in PEFT's JSON.
            c[key] = Value::Null;
            rejects(&c, key);
        }
    }
}

#[test]
fn wrong_types_and_values_are_errors_naming_the_key() {
    let lora = json!({"peft_type": "LORA", "r": 4, "target_modules": ["query"]});
    let flora = json!({"peft_type": "FLORA", "r": 2, "target_modules": ["query"]});
    let moppa = json!({"peft_type": "MOPPA"});
    let rlp = json!({"peft_type": "RLP", "num_prompt_tokens": 4, "r": 2});
    let with = |base: &Value, key: &str, v: Value| {
        let mut c = base.clone();
        c[key] = v;
        c
    };
    let cases = [
        (with(&lora, "peft_type", json!("IA3")), "peft_type"),
        (with(&lora, "peft_type", json!(3)), "peft_type"),
        // PEFT reads the types in upper case only (its `PeftType` values).
        (with(&lora, "peft_type", json!("lora")), "peft_type"),
        (with(&flora, "peft_type", json!("Flora")), "peft_type"),
        // An explicit null number is no number (PEFT takes it as None and fails on it); the
        // default comes only from leaving the key out.
        (with(&lora, "lora_alpha", Value::Null), "lora_alpha"),
        (with(&lora, "lora_dropout", Value::Null), "lora_dropout"),
        (with(&flora, "scale", Value::Null), "scale"),
        (with(&moppa, "entropy_scale", Value::Null), "entropy_scale"),
        (with(&lora, "r", json!("4")), "r"),
        (with(&lora, "r", json!(0)), "r"),
        (with(&lora, "r", json!(-2)), "r"),
        (with(&lora, "r", json!(2.5)), "r"),
        (with(&lora, "lora_alpha", json!("8")), "lora_alpha"),
        (with(&lora, "target_modules", json!(5)), "target_modules"),
        (with(&lora, "target_modules", json!([1, 2])), "target_modules"),
        (with(&lora, "target_modules", json!("(unclosed")), "target_modules"),
        (with(&lora, "use_rslora", json!("yes")), "use_rslora"),
        (with(&lora, "lora_dropout", json!(1.5)), "lora_dropout"),
        (with(&lora, "bias", json!("some")), "bias"),
        (with(&lora, "use_dora", json!(true)), "use_dora"),
        (with(&lora, "modules_to_save", json!(3)), "modules_to_save"),
        (with(&lora, "rank_pattern", json!(["query"])), "rank_pattern"),
        (with(&lora, "rank_pattern", json!({"query": 0})), "rank_pattern"),
        (with(&lora, "alpha_pattern", json!({"query": "x"})), "alpha_pattern"),
        (with(&lora, "layers_to_transform", json!("0")), "layers_to_transform"),
        (with(&lora, "layers_to_transform", json!([0, -1])), "layers_to_transform"),
        (with(&lora, "exclude_modules", json!(7)), "exclude_modules"),
        (with(&lora, "num_labels", json!(0)), "num_labels"),
        (with(&lora, "layer_replication", json!([[0, 1]])), "layer_replication"),
        (with(&lora, "use_qalora", json!("yes")), "use_qalora"),
        (with(&lora, "target_parameters", json!(["mlp.experts.down_proj"])), "target_parameters"),
        (with(&lora, "trainable_token_indices", json!([1, 2])), "trainable_token_indices"),
        (with(&lora, "alora_invocation_tokens", json!([5])), "alora_invocation_tokens"),
        // PEFT turns a variant on with its default settings for an empty sub-config.
        (with(&lora, "kasa_config", json!({})), "kasa_config"),
        (with(&lora, "velora_config", json!({})), "velora_config"),
        (with(&lora, "arrow_config", json!({})), "arrow_config"),
        (with(&lora, "monteclora_config", json!({})), "monteclora_config"),
        (with(&lora, "use_bdlora", json!({})), "use_bdlora"),
        (with(&lora, "init_lora_weights", json!("pissa")), "init_lora_weights"),
        (with(&lora, "init_lora_weights", json!("garbage")), "init_lora_weights"),
        (with(&lora, "init_lora_weights", json!(3)), "init_lora_weights"),
        (with(&lora, "bias", json!(null)), "bias"),
        (with(&lora, "layers_pattern", json!("(")), "layers_pattern"),
        (with(&lora, "layers_pattern", json!(["layer", 5])), "layers_pattern"),
        (with(&lora, "layers_pattern", json!(5)), "layers_pattern"),
        // As PEFT's LoraConfig: layer names need layer indices, and neither goes with a
        // string of targets ("all-linear" is one).
        (with(&lora, "layers_pattern", json!("layer")), "layers_pattern"),
        (with(&with(&lora, "target_modules", json!(".*query")), "layers_pattern", json!("")), "layers_pattern"),
        (
            with(&with(&lora, "target_modules", json!("all-linear")), "layers_to_transform", json!([0])),
            "layers_to_transform",
        ),
        (with(&flora, "r", json!([2, 0])), "r"),
        (with(&flora, "r", json!("2")), "r"),
        (with(&flora, "scale", json!("1")), "scale"),
        (with(&moppa, "num_heads", json!(0)), "num_heads"),
        (with(&moppa, "layers", json!("all")), "layers"),
        (with(&moppa, "layers", json!([])), "layers"),
        (with(&moppa, "layers", json!([1, 0, 1])), "layers"),
        (with(&moppa, "entropy_decay_fraction", json!(0)), "entropy_decay_fraction"),
        (with(&moppa, "entropy_scale", json!([1])), "entropy_scale"),
        (with(&rlp, "num_prompt_tokens", json!(0)), "num_prompt_tokens"),
        (with(&rlp, "r", json!(true)), "r"),
        (with(&rlp, "scale", json!({})), "scale"),
    ];
    for (cfg, key) in &cases {
        rejects(cfg, key);
    }
}

#[test]
fn peft_options_left_off_are_accepted() {
    let mut cfg = json!({"peft_type": "LORA", "r": 4, "target_modules": ["query"], "layers_to_transform": [1],
                         "layers_pattern": "layer", "init_lora_weights": true, "loftq_config": {}});
    for key in ["layer_replication", "target_parameters", "trainable_token_indices", "megatron_config", "arrow_config"]
    {
        cfg[key] = Value::Null;
    }
    for key in ["kasa_config", "velora_config", "monteclora_config", "use_bdlora"] {
        cfg[key] = Value::Null;
    }
    // QALoRA pools the inputs of GPTQ layers only: on a ViT's linear layers PEFT ignores it.
    cfg["use_qalora"] = json!(true);
    cfg["megatron_config"] = json!({});
    cfg["layer_replication"] = json!([]);
    lora(&cfg);
    cfg["layers_pattern"] = json!(["layers"]);
    cfg["init_lora_weights"] = json!("gaussian");
    lora(&cfg);
    // A list of several names, of which PEFT matches any (`blocks` names no ViT layer).
    cfg["layers_pattern"] = json!(["blocks", "layers"]);
    lora(&cfg);
    // On `nn.Linear` PEFT resets `fan_in_fan_out` to false (with a warning) and saves it so.
    cfg["fan_in_fan_out"] = json!(true);
    let written: Value = serde_json::from_str(&parse(&cfg).unwrap().to_json()).unwrap();
    assert_eq!(written["fan_in_fan_out"], json!(false), "{written}");
    // EVA touches only A and B: a trained adapter loads, a fresh one is refused by name (this
    // crate does not run it; it needs the training data). "orthogonal" is made fresh too.
    cfg["init_lora_weights"] = json!("eva");
    lora(&cfg);
    let e = adapted(&cfg).expect_err("a fresh EVA adapter");
    assert!(e.to_string().contains("`init_lora_weights`") && e.to_string().contains("eva"), "{e}");
    cfg["init_lora_weights"] = json!("orthogonal");
    lora(&cfg);
    assert_eq!(adapted(&cfg).expect("a fresh orthogonal adapter").len(), 1, "the query of layer 1");
}

#[test]
fn unknown_keys_are_ignored_and_kept_on_writing() {
    for (mut cfg, _) in minimal() {
        cfg["a_future_peft_key"] = json!({"nested": [1, 2]});
        cfg["task_type"] = json!("FEATURE_EXTRACTION");
        let parsed = parse(&cfg).unwrap_or_else(|e| panic!("{cfg}: {e}"));
        let written: Value = serde_json::from_str(&parsed.to_json()).unwrap();
        assert_eq!(written["a_future_peft_key"], cfg["a_future_peft_key"]);
        assert_eq!(written["task_type"], "FEATURE_EXTRACTION");
        assert_eq!(written["peft_type"], cfg["peft_type"]);
        // What was written parses to the same config.
        assert_eq!(parse(&written).unwrap().to_json(), parsed.to_json());
    }
}

#[test]
fn flora_ranks_are_an_int_or_one_per_mode() {
    let parse_r = |r: Value| match parse(&json!({"peft_type": "FLORA", "r": r, "target_modules": ["x"]})).unwrap().kind
    {
        AdapterKind::Flora(c) => c.r,
        _ => unreachable!(),
    };
    assert_eq!(parse_r(json!(3)), FloraRank::Uniform(3));
    assert_eq!(parse_r(json!([4, 3, 2, 2])), FloraRank::PerMode(vec![4, 3, 2, 2]));
    let dims = [16, 3, 2, 2];
    assert_eq!(peft_wgpu::adapters::flora::ranks(&FloraRank::Uniform(3), &dims).unwrap(), [3, 3, 2, 2]);
    assert!(peft_wgpu::adapters::flora::ranks(&FloraRank::PerMode(vec![2, 2]), &dims).is_err());
}

#[test]
fn rank_and_alpha_patterns_follow_peft_get_pattern_key() {
    // Expectations from peft.utils.other.get_pattern_key: the first pattern `p` (in file
    // order) with the module path matching `(.*\.)?(p)$`.
    let k0q = "vit.encoder.layer.0.attention.attention.query";
    let k1q = "vit.encoder.layer.1.attention.attention.query";
    let k1v = "vit.encoder.layer.1.attention.attention.value";
    let cases: [(Value, &str, Option<usize>); 13] = [
        (json!({"query": 2}), k0q, Some(2)),
        (json!({"uery": 2}), k0q, None),
        (json!({"attention.query": 2}), k0q, Some(2)),
        (json!({r"layer\.1\..*": 2}), k0q, None),
        (json!({r"layer\.1\..*": 2}), k1q, Some(2)),
        (json!({"value": 2, "layer.1.attention.attention.value": 3}), k1v, Some(2)),
        (json!({"layer.1.attention.attention.value": 3, "value": 2}), k1v, Some(3)),
        (json!({"q_proj": 2}), "vit.layers.0.attention.q_proj", Some(2)),
        (json!({"q_proj": 2}), k0q, None),
        (json!({k0q: 2}), k0q, Some(2)),
        (json!({"query|value": 2}), k1v, Some(2)),
        (json!({"1.attention.attention.value": 2}), k1v, Some(2)),
        (json!({"ayer.1.attention.attention.value": 2}), k1v, None),
    ];
    for (pattern, path, rank) in cases {
        let alphas: serde_json::Map<String, Value> =
            pattern.as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!(v.as_f64().unwrap() * 10.0))).collect();
        let c = lora(&json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query"],
                             "rank_pattern": pattern, "alpha_pattern": alphas}));
        let want = rank.map_or((8, 16.0), |r| (r, r as f64 * 10.0));
        assert_eq!(c.rank_alpha(path), want, "pattern {pattern} on {path}");
    }
}

#[test]
fn rslora_scales_by_the_square_root_of_the_rank() {
    let base = json!({"peft_type": "LORA", "r": 16, "lora_alpha": 8, "target_modules": ["query"]});
    let plain = lora(&base);
    assert!(!plain.use_rslora);
    assert_eq!(plain.scaling(16, 8.0), 0.5);
    let mut rs = base;
    rs["use_rslora"] = json!(true);
    let rs = lora(&rs);
    assert_eq!(rs.scaling(16, 8.0), 2.0);
    assert_eq!(rs.scaling(4, 6.0), 3.0);
    assert_eq!(lora(&json!({"peft_type": "LORA", "r": 4, "target_modules": ["q"]})).lora_alpha, 8.0, "PEFT's default");
}

/// File keys of the `lora_A` tensors of a fresh adapter, as `(module path, rank)`.
fn adapted(cfg: &Value) -> peft_wgpu::Result<Vec<(String, usize)>> {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let adapter = Adapter::new(&gpu, support::config(cfg), Path::new("adapter_config.json"), &vit, 0)?;
    Ok(adapter
        .trainable()
        .iter()
        .filter_map(|p| {
            let stem = p.key.strip_prefix("base_model.model.")?.strip_suffix(".lora_A.weight")?;
            Some((stem.to_string(), p.tensor.shape()[0]))
        })
        .collect())
}

fn paths(cfg: &Value) -> Vec<String> {
    adapted(cfg).unwrap_or_else(|e| panic!("{cfg}: {e}")).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn layers_to_transform_as_peft() {
    let q = |l: usize| format!("vit.encoder.layer.{l}.attention.attention.query");
    let lora = |targets: Value, layers: Value| json!({"peft_type": "LORA", "r": 2, "target_modules": targets, "layers_to_transform": layers});
    assert_eq!(paths(&lora(json!(["query", "projection"]), json!([1]))), [q(1)], "layer 1 only; the conv has no layer");
    assert_eq!(paths(&lora(json!(["query"]), json!(0))), [q(0)], "a single index");
    assert_eq!(paths(&lora(json!(["query"]), json!([]))), [q(0), q(1)], "an empty list selects every layer");
    assert_eq!(paths(&lora(json!([q(0), "query"]), json!([1]))), [q(0), q(1)], "an exact path is always adapted");
    rejects(&lora(json!(".*query"), json!([1])), "layers_to_transform");
    let err = adapted(&lora(json!(["query"]), json!([5]))).unwrap_err();
    assert!(err.to_string().contains("layers_to_transform") && err.to_string().contains('5'), "no layer 5: {err}");
    // `layers_pattern` names what comes before the index, as a Python regex in PEFT's
    // `(?:^|.*?\.)NAME\.(?P<idx>\d+)\.`, under either naming; "" and [] mean any name.
    let named = |pattern: Value| {
        let mut c = lora(json!(["query", "v_proj"]), json!([1]));
        c["layers_pattern"] = pattern;
        c
    };
    let v = |l: usize| format!("vit.layers.{l}.attention.v_proj");
    for pattern in [
        json!("layer"),
        json!("layers"),
        json!("vit.layers"),
        json!("encoder.layer"),
        json!("layers?"),
        json!(""),
        json!([]),
        json!(["blocks", "layer"]),
    ] {
        assert_eq!(paths(&named(pattern.clone())), [q(1), v(1)], "layers_pattern {pattern}");
    }
    // A name that finds no layer leaves nothing to adapt: refused by its key. So is one
    // whose alternatives split PEFT's expression (its first half matches without an index).
    for pattern in [json!("blocks"), json!("layer|layers"), json!(["layer|layers", "layers"])] {
        let err = adapted(&named(pattern.clone())).unwrap_err();
        let Error::Config { key, .. } = &err else { panic!("{pattern}: {err}") };
        assert_eq!(key, "layers_pattern", "{pattern}: {err}");
    }
}

#[test]
fn exclude_modules_as_peft() {
    let lora = |exclude: Value| json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"], "exclude_modules": exclude});
    let all = paths(&json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"]}));
    assert_eq!(all.len(), 4);
    let without = |gone: &[&str]| all.iter().filter(|p| !gone.contains(&p.as_str())).cloned().collect::<Vec<_>>();
    let v0 = "vit.encoder.layer.0.attention.attention.value";
    assert_eq!(paths(&lora(json!(["layer.0.attention.attention.value"]))), without(&[v0]), "a dotted suffix");
    assert_eq!(paths(&lora(json!([v0]))), without(&[v0]), "an exact path");
    assert_eq!(paths(&lora(json!(["ue"]))), all, "a suffix must start at a dot");
    let layer1 = ["vit.encoder.layer.1.attention.attention.query", "vit.encoder.layer.1.attention.attention.value"];
    assert_eq!(paths(&lora(json!(r"vit\.encoder\.layer\.1\..*"))), without(&layer1), "a regex on the whole path");
    let err = adapted(&lora(json!(["query", "value"]))).unwrap_err();
    assert!(err.to_string().contains("target_modules"), "everything excluded: {err}");
}

#[test]
fn each_module_is_keyed_in_the_naming_its_target_uses() {
    // PEFT looks a module's tensors up under its transformers version's naming; a config that
    // names `query` on disk and `fc2` under transformers 5 keys each in its own naming, so each
    // loads where its target matches (a mixed file can never load whole in one PEFT).
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "fc2", "projection"]});
    let mut got = paths(&cfg);
    got.sort();
    let mut want = vec!["vit.embeddings.patch_embeddings.projection".to_string()];
    for l in 0..2 {
        want.push(format!("vit.encoder.layer.{l}.attention.attention.query"));
        want.push(format!("vit.layers.{l}.mlp.fc2"));
    }
    want.sort();
    assert_eq!(got, want);
    // A module matched under both namings follows the config's naming; saved modules too.
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": r".*\.(q_proj|query)",
                     "modules_to_save": ["layers.1.layernorm_after"]});
    let a = Adapter::new(&gpu, support::config(&cfg), Path::new("adapter_config.json"), &vit, 0).unwrap();
    let keys: Vec<&str> = a.trainable().iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight"), "{keys:?}");
    assert!(keys.contains(&"base_model.model.vit.layers.1.layernorm_after.weight"), "{keys:?}");
    let cfg =
        json!({"peft_type": "FLORA", "r": 2, "target_modules": ["v_proj"], "modules_to_save": ["layernorm_before"]});
    let a = Adapter::new(&gpu, support::config(&cfg), Path::new("adapter_config.json"), &vit, 0).unwrap();
    let keys: Vec<&str> = a.trainable().iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"base_model.model.vit.layers.1.attention.v_proj.flora_core"), "{keys:?}");
    assert!(keys.contains(&"base_model.model.vit.layers.0.layernorm_before.weight"), "{keys:?}");
}

#[test]
fn rank_pattern_sets_the_rank_of_the_matching_modules() {
    let cfg = json!({"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"], "rank_pattern": {"layer.1.attention.attention.value": 2, "query": 3}});
    let ranks: Vec<usize> = adapted(&cfg).unwrap().into_iter().map(|(_, r)| r).collect();
    assert_eq!(ranks, [3, 4, 3, 2], "query 3 everywhere, value 4 except layer 1");
}

#[test]
fn patterns_of_a_new_adapter_match_the_naming_it_is_saved_in() {
    // Targets naming the modules in both namings: a new LoRA adapter is saved in transformers
    // 5's naming, whose paths PEFT 0.18 and later match the patterns against, as PEFT 0.21
    // makes rank 4 from this config.
    for targets in [json!(["query", "q_proj"]), json!(["q_proj", "query"])] {
        let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": targets, "rank_pattern": {"q_proj": 4}});
        let ranks: Vec<usize> = adapted(&cfg).unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(ranks, [4, 4], "{cfg}");
    }
    // Named in one naming only, a module's pattern is matched in that one.
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "rank_pattern": {"query": 4}});
    let ranks: Vec<usize> = adapted(&cfg).unwrap().into_iter().map(|(_, r)| r).collect();
    assert_eq!(ranks, [4, 4], "{cfg}");
}

#[test]
fn config_parts_that_change_nothing_get_a_note() {
    let gpu = gpu();
    let vit = support::tiny_vit(&gpu);
    let notes = |cfg: Value| {
        Adapter::new(&gpu, support::config(&cfg), Path::new("adapter_config.json"), &vit, 0).unwrap().config_notes()
    };
    // A typo among the pattern keys; `q_proj` names the adapted `query` in transformers 5's naming.
    let got = notes(json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"],
                           "rank_pattern": {"qurey": 3, "query": 4}, "alpha_pattern": {"q_proj": 6, "fc9": 1}}));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("rank_pattern key `qurey` matches no adapted module"), "{got:?}");
    assert!(got[1].contains("alpha_pattern key `fc9`"), "{got:?}");
    let got = notes(json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "exclude_modules": ["qurey"]}));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("exclude_modules") && got[0].contains("qurey") && got[0].contains("excludes none"),
        "{got:?}"
    );
    // A new head is trained in full, whatever the targets say of the classifier.
    for peft_type in ["LORA", "FLORA"] {
        let got =
            notes(json!({"peft_type": peft_type, "r": 2, "target_modules": ["query", "classifier"], "num_labels": 5}));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("num_labels (5) makes a new head") && got[0].contains("trained in full"), "{got:?}");
    }
    // A file whose modules_to_save names a module and one inside it, as PEFT wrote it: its
    // outputs here use every saved tensor, PEFT's did not. A new such adapter is saved with
    // its modules spelled out, so it has no note.
    let nested = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "modules_to_save": ["embeddings"]});
    assert_eq!(notes(nested.clone()), Vec::<String>::new(), "{nested}");
    let dir = std::env::temp_dir().join(format!("peft-wgpu-nested-note-{}", std::process::id()));
    let fresh = Adapter::new(&gpu, support::config(&nested), Path::new("adapter_config.json"), &vit, 0).unwrap();
    fresh.save(&gpu, &dir).unwrap();
    let config_path = dir.join("adapter_config.json");
    let mut written: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    written["modules_to_save"] = json!(["embeddings"]);
    std::fs::write(&config_path, written.to_string()).unwrap();
    let got = Adapter::load(&gpu, &dir, &vit).unwrap().config_notes();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("a module and one inside it") && got[0].contains("every saved tensor"), "{got:?}");
    for quiet in [
        json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"],
               "exclude_modules": ["layer.1.attention.attention.value"], "rank_pattern": {"value": 3}}),
        json!({"peft_type": "FLORA", "r": 2, "target_modules": ["query"]}),
    ] {
        assert_eq!(notes(quiet.clone()), Vec::<String>::new(), "{quiet}");
    }
}

#[test]
fn targets_that_match_nothing_are_errors_naming_target_modules() {
    for cfg in [
        json!({"peft_type": "LORA", "r": 2, "target_modules": ["nothing_here"]}),
        json!({"peft_type": "LORA", "r": 2, "target_modules": "vit\\.nothing.*"}),
        json!({"peft_type": "LORA", "r": 2, "target_modules": ["layernorm_before"]}),
        json!({"peft_type": "FLORA", "r": 2, "target_modules": ["nothing_here"]}),
    ] {
        match adapted(&cfg) {
            Err(e @ Error::Config { .. }) => assert!(e.to_string().contains("`target_modules`"), "{cfg}: {e}"),
            Err(e) => panic!("{cfg}: unexpected error kind: {e}"),
            Ok(p) => panic!("{cfg}: adapted {p:?}"),
        }
    }
    let cfg = json!({"peft_type": "MOPPA", "modules_to_save": ["no_such_module"]});
    let err = adapted(&cfg).unwrap_err();
    assert!(err.to_string().contains("`modules_to_save`"), "{err}");
}

/// A target that names a module other than a linear or conv layer (a LayerNorm, a container
/// such as `attention` or `mlp`, a dropout), as a name or through a regex, is refused naming
/// the entry and the module, as PEFT refuses it, for LoRA and FLoRA alike; a name matching no
/// module at all is passed over, as in PEFT.
#[test]
fn targets_naming_other_modules_are_refused_as_peft_does() {
    let cases = [
        (json!(["q_proj", "layernorm_before"]), "`layernorm_before` names `vit.encoder.layer.0.layernorm_before`"),
        (json!(["query", "attention"]), "`attention` names `vit.encoder.layer.0.attention`"),
        (json!(["fc1", "mlp"]), "`mlp` names `vit.layers.0.mlp`"),
        (json!(["query", "dropout"]), "`dropout` names `vit.embeddings.dropout`"),
        (json!(["query", "output"]), "`output` names `vit.encoder.layer.0.attention.output`"),
        (json!(".*attention.*"), "regex \".*attention.*\" matches `vit.encoder.layer.0.attention`"),
        (json!(r"vit\.layers\.0\..*"), "matches `vit.layers.0.attention`"),
    ];
    for peft_type in ["LORA", "FLORA"] {
        for (targets, names) in &cases {
            let cfg = json!({"peft_type": peft_type, "r": 2, "target_modules": targets});
            match adapted(&cfg) {
                Err(e @ Error::Config { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("`target_modules`") && text.contains(names), "{cfg}: {text}");
                    assert!(text.contains("not a linear or conv layer"), "{cfg}: {text}");
                }
                Err(e) => panic!("{cfg}: unexpected error kind: {e}"),
                Ok(p) => panic!("{cfg}: accepted, adapting {p:?}"),
            }
        }
    }
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query", "no_such_module"]});
    assert_eq!(paths(&cfg).len(), 2, "an entry naming nothing is passed over");
}

/// A config changed in code is written as changed (and reads back so); a field left alone
/// keeps the file's spelling, and unknown keys survive.
#[test]
fn configs_changed_in_code_are_written_as_changed() {
    let reread = |c: &AdapterConfig| parse(&serde_json::from_str(&c.to_json()).unwrap()).unwrap();
    let mut lora =
        parse(&json!({"peft_type": "LORA", "r": 2, "lora_alpha": 16, "target_modules": ["query"], "custom": 1}))
            .unwrap();
    let text = lora.to_json();
    assert!(text.contains("\"lora_alpha\": 16,") && text.contains("\"custom\": 1"), "{text}");
    let AdapterKind::Lora(l) = &mut lora.kind else { panic!("LoRA") };
    l.lora_alpha = 8.0;
    l.target_modules = peft_wgpu::nn::Targets::Names(vec!["value".into()]);
    l.rank_pattern = vec![("value".into(), 3)];
    let AdapterKind::Lora(back) = reread(&lora).kind else { panic!("LoRA") };
    assert_eq!((back.lora_alpha, back.rank_pattern), (8.0, vec![("value".to_string(), 3)]));
    assert!(matches!(back.target_modules, peft_wgpu::nn::Targets::Names(n) if n == ["value"]));

    // `layers_pattern` keeps the file's spelling while it means the same names ("layer" for
    // ["layer"], "" for none) and is written as changed.
    let layered = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "layers_to_transform": [1],
        "layers_pattern": "layer"});
    let mut layered = parse(&layered).unwrap();
    assert!(layered.to_json().contains("\"layers_pattern\": \"layer\""), "{}", layered.to_json());
    let AdapterKind::Lora(l) = &mut layered.kind else { panic!("LoRA") };
    l.layers_pattern = vec!["layers".into(), "layer".into()];
    let AdapterKind::Lora(back) = reread(&layered).kind else { panic!("LoRA") };
    assert_eq!(back.layers_pattern, ["layers", "layer"]);

    // Whole numbers written as floats (`2.0`, as Python code may spell them) read as integers
    // and are written back as integers, which PEFT needs to size its tensors.
    let floaty = json!({"peft_type": "LORA", "r": 2.0, "lora_alpha": 4, "target_modules": ["query"],
        "rank_pattern": {"query": 3.0}, "layers_to_transform": [0.0]});
    let written: Value = serde_json::from_str(&parse(&floaty).unwrap().to_json()).unwrap();
    assert_eq!((&written["r"], &written["rank_pattern"]["query"]), (&json!(2), &json!(3)), "{written}");
    assert_eq!((&written["lora_alpha"], &written["layers_to_transform"]), (&json!(4), &json!([0])), "{written}");
    assert!(written["r"].is_u64() && written["rank_pattern"]["query"].is_u64(), "{written}");
    // A float too large to be an exact integer is not read as one.
    for huge in [json!({"r": 1e300}), json!({"r": 2, "layers_to_transform": [1e20]})] {
        let mut cfg = json!({"peft_type": "LORA", "target_modules": ["query"]});
        cfg.as_object_mut().unwrap().extend(huge.as_object().unwrap().clone());
        let e = parse(&cfg).expect_err("not an integer");
        assert!(e.to_string().contains("non-negative integer"), "{e}");
    }

    let mut flora = parse(&json!({"peft_type": "FLORA", "r": 2, "scale": 1.0, "target_modules": ["query"]})).unwrap();
    let AdapterKind::Flora(f) = &mut flora.kind else { panic!("FLoRA") };
    (f.scale, f.r) = (3.0, FloraRank::PerMode(vec![2, 1]));
    let AdapterKind::Flora(back) = reread(&flora).kind else { panic!("FLoRA") };
    assert_eq!((back.scale, back.r), (3.0, FloraRank::PerMode(vec![2, 1])));

    let mut moppa = parse(&json!({"peft_type": "MOPPA"})).unwrap();
    let AdapterKind::Moppa(m) = &mut moppa.kind else { panic!("MoPPA") };
    (m.entropy_scale, m.layers, m.num_heads) = (0.5, Some(vec![1]), Some(4));
    let AdapterKind::Moppa(back) = reread(&moppa).kind else { panic!("MoPPA") };
    assert_eq!((back.entropy_scale, back.layers, back.num_heads), (0.5, Some(vec![1]), Some(4)));

    let mut rlp = parse(&json!({"peft_type": "RLP", "num_prompt_tokens": 2, "r": 2})).unwrap();
    let AdapterKind::Rlp(r) = &mut rlp.kind else { panic!("RLP") };
    (r.scale, r.num_prompt_tokens) = (3.0, 5);
    let AdapterKind::Rlp(back) = reread(&rlp).kind else { panic!("RLP") };
    assert_eq!((back.scale, back.num_prompt_tokens), (3.0, 5));
}

/// As PEFT's sequence-classification models do, `task_type: "SEQ_CLS"` trains and saves the
/// head with the adapter (PEFT adds `classifier` and `score` to `modules_to_save`).
#[test]
fn a_sequence_classification_task_saves_the_head() {
    let c = parse(&json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "task_type": "SEQ_CLS"})).unwrap();
    assert_eq!(c.modules_to_save, ["classifier", "score"]);
    let c = parse(&json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "task_type": "SEQ_CLS",
                          "modules_to_save": ["classifier", "layernorm"]}))
    .unwrap();
    assert_eq!(c.modules_to_save, ["classifier", "layernorm", "score"]);
    let c = parse(&json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"]})).unwrap();
    assert!(c.modules_to_save.is_empty());
    // Tasks PEFT cannot load for an image classifier (a name it does not know, a language
    // model's) are refused by name rather than written into a file PEFT then refuses.
    for task in [json!("BOGUS"), json!("CAUSAL_LM"), json!("IMAGE_CLASSIFICATION"), json!(5)] {
        let e = parse(&json!({"peft_type": "RLP", "num_prompt_tokens": 1, "r": 1, "task_type": task}))
            .expect_err("a task PEFT cannot load on a ViT");
        assert!(e.to_string().contains("`task_type`") && e.to_string().contains(&task.to_string()), "{e}");
    }
}

/// MoPPA transforms the token grid with DCTs of at most `ops::dct::MAX_LEN` points a side: a
/// model with a longer side is refused on the host, naming the adapter config and the grid.
#[test]
fn moppa_refuses_grids_past_the_dct_length() {
    let mut model = peft_wgpu::demo::model::architecture();
    let side = peft_wgpu::ops::dct::MAX_LEN + 8;
    (model.image_size, model.patch_size) = ([1, side], [1, 1]);
    let cfg = parse(&json!({"peft_type": "MOPPA"})).unwrap();
    let e = Adapter::check(cfg, Path::new("cfg/adapter_config.json"), None, &model).expect_err("a grid too long");
    let text = e.to_string();
    assert!(text.contains("adapter_config.json") && text.contains(&format!("1 × {side}")), "{text}");
    let cfg = parse(&json!({"peft_type": "MOPPA"})).unwrap();
    model.image_size = [1, peft_wgpu::ops::dct::MAX_LEN];
    assert!(
        Adapter::check(cfg, Path::new("cfg/adapter_config.json"), None, &model).is_ok(),
        "the longest side allowed"
    );
}

/// A config saved with a UTF-8 byte-order mark (as some Windows editors save) reads like the
/// same text without it; a mark alone, or text that is not JSON after it, is still an error
/// naming the file.
#[test]
fn a_byte_order_mark_is_skipped() {
    let path = Path::new("cfg/adapter_config.json");
    let text = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query"]}).to_string();
    let with_mark = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
    let read = AdapterConfig::from_json(&JsonFile::parse(path, &with_mark).unwrap()).unwrap();
    let plain = parse(&serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(format!("{:?}", read.kind), format!("{:?}", plain.kind));
    for bad in [b"\xEF\xBB\xBF".as_slice(), b"\xEF\xBB\xBF\xEF\xBB\xBF{}"] {
        let err = JsonFile::parse(path, bad).unwrap_err().to_string();
        assert!(err.contains("cfg/adapter_config.json") && err.contains("invalid JSON"), "{err}");
    }
}

/// PEFT's patterns are Python's: what Python refuses is refused by name, with the reason it
/// gives; an empty `target_modules` names nothing, an empty `exclude_modules` (false to PEFT)
/// excludes nothing.
#[test]
fn patterns_python_refuses_and_empty_targets_are_named() {
    for (pattern, reason) in [
        (r".*\p{L}_proj", r"bad escape \p"),
        (r"(?<=\d+\.)attention\.q_proj", "look-behind requires fixed-width pattern"),
        (".*(?<n>q)_proj", "unknown extension ?<n"),
        ("[z-a]_proj", "bad character range z-a"),
        ("a(?i)q_proj", "global flags not at the start"),
    ] {
        let config = json!({"peft_type": "LORA", "r": 2, "target_modules": pattern});
        rejects(&config, "target_modules");
        let e = parse(&config).expect_err(pattern).to_string();
        assert!(e.contains(reason), "{pattern}: {e}");
    }
    let key = json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "rank_pattern": {r"q_proj\2": 4}});
    rejects(&key, "rank_pattern");
    rejects(&json!({"peft_type": "LORA", "r": 2, "target_modules": ""}), "target_modules");
    for none in [json!(""), Value::Null] {
        let c = lora(&json!({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "exclude_modules": none}));
        assert!(c.exclude_modules.is_none(), "{none}");
    }
}
