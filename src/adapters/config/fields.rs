//! The fields of a config as JSON values, for writing: what the struct holds now, so a config
//! changed in code is saved as changed, while a field that still means what the file said
//! keeps the file's spelling (`16` stays `16`, a target list keeps its order).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::lora::layer_names;
use super::{AdapterKind, FloraRank, LoraInit};
use crate::nn::Targets;

/// Sets each of `kind`'s fields in `o`, unless `o` already holds a value that means the same.
pub(super) fn write_fields(kind: &AdapterKind, o: &mut Map<String, Value>) {
    for (key, value) in fields(kind) {
        let unchanged = match o.get(key) {
            Some(old) if key == "layers_pattern" => layer_names(old) == layer_names(&value),
            Some(old) => same(old, &value),
            None => value.is_null(),
        };
        if !unchanged {
            o.insert(key.into(), value);
        }
    }
}

/// `kind`'s fields, each as the JSON value PEFT would write for it.
fn fields(kind: &AdapterKind) -> Vec<(&'static str, Value)> {
    let targets = |t: &Targets| match t {
        Targets::Names(names) => json!(names),
        Targets::Regex(_) => json!(t.config_regex().unwrap_or_default()),
    };
    let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
    match kind {
        AdapterKind::Lora(c) => vec![
            ("r", json!(c.r)),
            ("lora_alpha", json!(c.lora_alpha)),
            ("lora_dropout", json!(c.lora_dropout)),
            ("use_rslora", json!(c.use_rslora)),
            ("target_modules", targets(&c.target_modules)),
            ("exclude_modules", opt(c.exclude_modules.as_ref().map(targets))),
            ("layers_to_transform", opt(c.layers_to_transform.as_ref().map(|l| json!(l)))),
            ("layers_pattern", if c.layers_pattern.is_empty() { Value::Null } else { json!(c.layers_pattern) }),
            ("rank_pattern", Value::Object(c.rank_pattern.iter().map(|(k, r)| (k.clone(), json!(r))).collect())),
            ("alpha_pattern", Value::Object(c.alpha_pattern.iter().map(|(k, a)| (k.clone(), json!(a))).collect())),
            (
                "init_lora_weights",
                match c.init {
                    LoraInit::Default => json!(true),
                    LoraInit::Gaussian => json!("gaussian"),
                    LoraInit::Random => json!(false),
                    LoraInit::Orthogonal => json!("orthogonal"),
                    LoraInit::LoadOnly(name) => json!(name),
                },
            ),
            ("bias", json!(c.bias.as_str())),
        ],
        AdapterKind::Flora(c) => vec![
            (
                "r",
                match &c.r {
                    FloraRank::Uniform(r) => json!(r),
                    FloraRank::PerMode(ranks) => json!(ranks),
                },
            ),
            ("scale", json!(c.scale)),
            ("target_modules", targets(&c.target_modules)),
        ],
        AdapterKind::Moppa(c) => vec![
            ("num_heads", opt(c.num_heads.map(|h| json!(h)))),
            ("layers", opt(c.layers.as_ref().map(|l| json!(l)))),
            ("entropy_scale", json!(c.entropy_scale)),
            ("entropy_decay_fraction", json!(c.entropy_decay_fraction)),
        ],
        AdapterKind::Rlp(c) => {
            vec![("num_prompt_tokens", json!(c.num_prompt_tokens)), ("r", json!(c.r)), ("scale", json!(c.scale))]
        }
    }
}

/// Whether the file's value `a` means the same setting as the struct's `b`: numbers by value
/// (`16` for a float `16.0`), except that an integer field (a rank, a count) is rewritten
/// unless the file spells it as an integer, since PEFT builds tensors of that size and
/// fails on `2.0`; lists of names as sets (PEFT writes `target_modules` from a set); objects
/// key by key.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if y.is_f64() => x.as_f64() == y.as_f64(),
        (Value::Number(x), Value::Number(y)) => !x.is_f64() && x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) if x.iter().chain(y).all(Value::is_string) => {
            let set = |v: &[Value]| v.iter().filter_map(|s| s.as_str().map(str::to_string)).collect::<BTreeSet<_>>();
            set(x) == set(y)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
