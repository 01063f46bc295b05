//! A `ViTModel` backbone as the model (weights without the `vit.` prefix, no classifier, a
//! pooler), through the binary: with an adapter that brings a new head it trains, evaluates
//! and merges into a `ViTForImageClassification` folder, as
//! `ViTForImageClassification.from_pretrained(backbone, num_labels=N)` under PEFT does;
//! without one, every command refuses it by name.

mod cli_support;

use cli_support::*;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// The tiny ViT saved as a backbone would be: keys without `vit.`, no classifier, a pooler,
/// `architectures: ["ViTModel"]` and no labels.
fn backbone(dir: &Path) -> PathBuf {
    let model = model_copy(dir);
    edit_tensors(&model.join("model.safetensors"), |tensors| {
        tensors.retain(|t| !t.0.starts_with("classifier."));
        for t in tensors.iter_mut() {
            t.0 = t.0.strip_prefix("vit.").expect("a vit. key").to_string();
        }
        tensors.push(("pooler.dense.weight".into(), Dtype::F32, vec![16, 16], f32_bytes(&[0.01; 256])));
        tensors.push(("pooler.dense.bias".into(), Dtype::F32, vec![16], f32_bytes(&[0.0; 16])));
    });
    edit_json(&model.join("config.json"), |c| {
        let c = c.as_object_mut().expect("object");
        c.insert("architectures".into(), serde_json::json!(["ViTModel"]));
        c.remove("id2label");
        c.remove("label2id");
    });
    model
}

fn logits(path: &Path) -> Vec<u8> {
    read_tensors(path).into_iter().find(|t| t.0 == "logits").expect("logits").3
}

#[test]
fn a_backbone_trains_evaluates_and_merges_with_a_new_head_only() {
    let dir = scratch("backbone");
    let data = good_data(&dir);
    let backbone = backbone(&dir);
    let full = fixture("vit_tiny");
    let (b, d) = (s(&backbone), s(&data));
    let head = dir.join("head.json");
    std::fs::write(
        &head,
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value"], "num_labels": 5,
            "modules_to_save": ["classifier"]}"#,
    )
    .expect("config");
    let no_head = dir.join("no_head.json");
    std::fs::write(&no_head, r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#).expect("config");

    // Without a head of the adapter's own, nothing can classify with it.
    fails(&["eval", "--model", b, "--data", d], INPUT, &[b, "has no classifier", "num_labels"]);
    let train = |config: &Path, model: &str, out: &Path| {
        let args = ["train", "--model", model, "--adapter-config", s(config), "--data", d, "--out", s(out)];
        [&args[..], &["--steps", "2", "--batch-size", "3", "--no-shuffle", "--optimizer", "sgd", "--lr", "0.1"]]
            .concat()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let refused = train(&no_head, b, &dir.join("never"));
    fails(&refused.iter().map(String::as_str).collect::<Vec<_>>(), INPUT, &[b, "has no classifier"]);
    let headless_adapter = dir.join("headless_adapter");
    succeeds(&train(&no_head, s(&full), &headless_adapter).iter().map(String::as_str).collect::<Vec<_>>());
    let merged_none = dir.join("m0");
    fails(
        &["merge", "--model", b, "--adapter", s(&headless_adapter), "--out", s(&merged_none)],
        INPUT,
        &[b, "has no classifier"],
    );
    fails(&["eval", "--model", b, "--adapter", s(&headless_adapter), "--data", d], INPUT, &[b, "has no classifier"]);
    // A config that names `classifier` but a file without one (PEFT trained on the backbone
    // itself, which has no such module) does not classify with the missing head's zeros.
    edit_json(&headless_adapter.join("adapter_config.json"), |c| {
        c["modules_to_save"] = serde_json::json!(["classifier"]);
    });
    let culprits = ["headless_adapter", "classifier.weight"];
    fails(&["eval", "--model", b, "--adapter", s(&headless_adapter), "--data", d], INPUT, &culprits);
    let merge = ["merge", "--model", b, "--adapter", s(&headless_adapter), "--out", s(&merged_none)];
    fails(&merge, INPUT, &culprits);

    // With a new head, the backbone trains as the classifier it is part of: the same adapter
    // as from the whole model, whose own head the new one replaces.
    let (from_backbone, from_full) = (dir.join("from_backbone"), dir.join("from_full"));
    succeeds(&train(&head, b, &from_backbone).iter().map(String::as_str).collect::<Vec<_>>());
    succeeds(&train(&head, s(&full), &from_full).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        read_tensors(&from_backbone.join("adapter_model.safetensors")),
        read_tensors(&from_full.join("adapter_model.safetensors")),
        "the adapter trained on the backbone"
    );
    let eval_into = |model: &str, adapter: Option<&Path>, out: &Path| {
        let mut args = vec!["eval", "--model", model, "--data", d, "--logits-out", s(out)];
        if let Some(a) = adapter {
            args.extend(["--adapter", s(a)]);
        }
        succeeds(&args);
        logits(out)
    };
    let with_adapter = eval_into(b, Some(&from_backbone), &dir.join("adapted.safetensors"));
    assert_eq!(with_adapter, eval_into(s(&full), Some(&from_full), &dir.join("full.safetensors")));

    // Merged, it is a whole classifier: `vit.` keys and the adapter's head.
    let merged = dir.join("merged");
    succeeds(&["merge", "--model", b, "--adapter", s(&from_backbone), "--out", s(&merged)]);
    let keys: Vec<String> = read_tensors(&merged.join("model.safetensors")).into_iter().map(|t| t.0).collect();
    assert!(keys.contains(&"classifier.weight".to_string()), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("vit.") || k.starts_with("classifier.")), "{keys:?}");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("config.json")).expect("config")).expect("json");
    assert_eq!(c["architectures"], serde_json::json!(["ViTForImageClassification"]), "{c}");
    let alone = eval_into(s(&merged), None, &dir.join("merged.safetensors"));
    let close = |a: &[u8], b: &[u8]| {
        a.chunks(4).zip(b.chunks(4)).all(|(x, y)| {
            let (x, y) = (f32::from_le_bytes(x.try_into().expect("4")), f32::from_le_bytes(y.try_into().expect("4")));
            (x - y).abs() <= 1e-5 * (1.0 + x.abs())
        })
    };
    assert!(close(&alone, &with_adapter), "the merged model gives the adapter's logits");
    std::fs::remove_dir_all(&dir).ok();
}
