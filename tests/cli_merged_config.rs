//! The config of a merged model, through the binary: it names the class it now is
//! (`ViTForImageClassification`, whatever the base's said), its dtype is the f32 the weights
//! are written in (with a note when the base's was another), and a head for a new task has
//! transformers' `LABEL_i` names, not the base task's, even at the same size.

mod cli_support;

use cli_support::*;

fn config(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("json")
}

#[test]
fn a_merged_config_names_its_class_dtype_and_labels() {
    let dir = scratch("merged-config");
    let data = good_data(&dir);
    let model = model_copy(&dir);
    let names = ["cat", "dog", "bird", "fish", "frog"];
    edit_json(&model.join("config.json"), |c| {
        c["architectures"] = serde_json::json!(["ViTModel"]);
        c["torch_dtype"] = "float16".into();
        c["id2label"] = names.iter().enumerate().map(|(i, n)| (i.to_string(), serde_json::json!(n))).collect();
        c["label2id"] = names.iter().enumerate().map(|(i, n)| (n.to_string(), serde_json::json!(i))).collect();
    });
    let (m, d) = (s(&model), s(&data));

    // The adapter's head serves the base's task: its label names stay.
    let merged = dir.join("merged");
    let out = run(&["merge", "--model", m, "--adapter", s(&fixture("adapters/lora_v4")), "--out", s(&merged)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("written in float32") && stderr.contains("says float16"), "{stderr}");
    let c = config(&merged);
    assert_eq!(c["architectures"], serde_json::json!(["ViTForImageClassification"]), "{c}");
    assert_eq!(c["torch_dtype"], "float32", "{c}");
    assert_eq!(c["id2label"]["2"], "bird", "{c}");

    // A head for a new task of the same size: transformers' names.
    let new_task = dir.join("new_task.json");
    std::fs::write(
        &new_task,
        r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "num_labels": 5, "modules_to_save": ["classifier"]}"#,
    )
    .expect("config");
    let adapter = dir.join("adapter");
    let train = ["train", "--model", m, "--adapter-config", s(&new_task), "--data", d, "--out", s(&adapter)];
    succeeds(&[&train[..], &["--steps", "1", "--batch-size", "2"]].concat());
    let merged_new = dir.join("merged_new");
    succeeds(&["merge", "--model", m, "--adapter", s(&adapter), "--out", s(&merged_new)]);
    let c = config(&merged_new);
    let labels: Vec<&str> = (0..5).map(|i| c["id2label"][i.to_string()].as_str().expect("a name")).collect();
    assert_eq!(labels, ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4"], "{c}");
    assert_eq!(c["label2id"]["LABEL_3"], 3, "{c}");
    std::fs::remove_dir_all(&dir).ok();
}
