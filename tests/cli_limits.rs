//! Bad runs through the binary (SPEC §14) that only the inputs together reveal: an adapter
//! made for another model, sizes beyond the device or the free memory, logits or losses that
//! are not finite, and a merge whose result overflows f32. Each ends with its exit code and
//! one short line naming the file, key, value, image or step at fault, and leaves no partial
//! output.

mod cli_support;

use cli_support::*;
use safetensors::Dtype;

// ---------------------------------------------------------------------------------------
// Adapters made for another model

#[test]
fn adapters_for_another_model_are_named() {
    let dir = scratch("other-model");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let (m, d) = (s(&model), s(&data));
    let eval = |a: &std::path::Path| fails(&["eval", "--model", m, "--adapter", s(a), "--data", d], INPUT, &[]);

    // LoRA for a hidden-32 model: every [r, 16] A becomes [r, 32].
    let wide = adapter_copy("lora_v4", &dir);
    let key = "base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight";
    edit_tensors(&wide.join("adapter_model.safetensors"), |t| {
        for (k, _, shape, bytes) in t.iter_mut() {
            if k.ends_with("lora_A.weight") && shape[1] == 16 {
                shape[1] = 32;
                bytes.extend(bytes.clone());
            }
        }
    });
    let line = eval(&wide);
    assert!(line.contains(key) && line.contains("[4, 32]") && line.contains("expected [4, 16]"), "{line}");

    // Keys for layer 11 on a 2-layer model.
    let deep = adapter_copy("lora_v4", &dir.join("deep"));
    let extra = "base_model.model.vit.encoder.layer.11.attention.attention.query.lora_A.weight";
    edit_tensors(&deep.join("adapter_model.safetensors"), |t| {
        t.push((extra.into(), Dtype::F32, vec![4, 16], f32_bytes(&[0.0; 64])));
    });
    let line = eval(&deep);
    assert!(line.contains(extra) && line.contains("another model"), "{line}");

    // A tensor the config needs is missing.
    let short = adapter_copy("lora_v4", &dir.join("short"));
    let gone = "base_model.model.vit.encoder.layer.1.attention.attention.value.lora_B.weight";
    edit_tensors(&short.join("adapter_model.safetensors"), |t| t.retain(|(k, ..)| k != gone));
    let line = eval(&short);
    assert!(line.contains(gone) && line.contains("missing"), "{line}");

    // MoPPA made for a 3-head model: k_* are [4, 4, 3].
    let heads = adapter_copy("moppa", &dir);
    edit_tensors(&heads.join("adapter_model.safetensors"), |t| {
        for (k, _, shape, bytes) in t.iter_mut() {
            if k.contains("moppa.k_") {
                *shape = vec![4, 4, 3];
                *bytes = f32_bytes(&[1.0; 48]);
            }
        }
    });
    let line = eval(&heads);
    assert!(line.contains("moppa.k_") && line.contains("[4, 4, 3]"), "{line}");

    // A config for another adapter type beside these tensors.
    let swapped = adapter_copy("rlp", &dir.join("swapped"));
    std::fs::copy(fixture("adapters/lora_v4/adapter_config.json"), swapped.join("adapter_config.json")).expect("copy");
    let line = eval(&swapped);
    assert!(line.contains("adapter_model.safetensors") && line.contains("lora_A"), "{line}");

    // Integer tensors where floats belong.
    let ints = adapter_copy("rlp", &dir.join("ints"));
    edit_tensors(&ints.join("adapter_model.safetensors"), |t| {
        let e = t.iter_mut().find(|(k, ..)| k == "rlp.A").expect("rlp.A");
        e.1 = Dtype::I32;
    });
    let line = eval(&ints);
    assert!(line.contains("rlp.A") && line.contains("I32"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Device limits

#[test]
fn sizes_beyond_the_device_are_split_or_refused_by_name() {
    let dir = scratch("device");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    let lora = fixture("adapters/lora_v4");
    let out = dir.join("out");
    let (m, l, d, o) = (s(&model), s(&lora), s(&data), s(&out));
    // A batch whose list of rows overflows memory: refused before the GPU opens.
    let line = fails(&train_args(m, l, d, o, &["--batch-size", "18446744073709551615"]), USAGE, &["--batch-size"]);
    assert!(line.contains("18446744073709551615 images") && line.contains("more than one step can list"), "{line}");
    // A head of 2²⁰ labels has 4 MiB of logits per image: one image more than the device's
    // largest tensor holds (33 on lavapipe, whose bindings take 128 MiB) is computed in two
    // pieces whose gradients are summed.
    let fit = peft_wgpu::Gpu::new().expect("a GPU adapter").max_tensor_bytes().0 / (4 << 20);
    let batch = (fit + 1).to_string();
    let cfg = dir.join("adapter_config.json");
    let head = r#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "num_labels": 1048576,
                   "modules_to_save": ["classifier"]}"#;
    std::fs::write(&cfg, head).expect("config");
    let args = ["train", "--model", m, "--adapter-config", s(&cfg), "--data", d, "--out", o, "--batch-size", &batch];
    let done = run(&[&args[..], &["--steps", "1"]].concat());
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(err.contains(&format!("--batch-size {batch} is more images than this device takes at once")), "{err}");
    assert!(err.contains(&format!("in 2 pieces of at most {fit} images and sums their gradients")), "{err}");
    assert!(out.join("adapter_model.safetensors").is_file(), "{err}");
    std::fs::remove_dir_all(&out).expect("remove the adapter");
    // An adapter whose tensors cannot be indexed: RLP with A of 65536 × 65536.
    std::fs::write(&cfg, r#"{"peft_type": "RLP", "num_prompt_tokens": 65536, "r": 65536}"#).expect("config");
    let args = ["train", "--model", m, "--adapter-config", s(&cfg), "--data", d, "--out", o];
    fails(&args, DEVICE, &["rlp.A", "[65536, 65536]", "adapter_config.json"]);
    // The GPUs' kernels compute attention scores in pieces of whole heads, so one head's
    // T×T must fit one tensor: 65,536 prompts make more than 2³² scores, beyond any device.
    std::fs::write(&cfg, r#"{"peft_type": "RLP", "num_prompt_tokens": 65536, "r": 2}"#).expect("config");
    let args = ["train", "--model", m, "--adapter-config", s(&cfg), "--data", d, "--out", o, "--batch-size", "1"];
    let line = check_failure(&run_env(&args, &[("PEFT_WGPU_KERNELS", "gpu")]), DEVICE, &[], false);
    assert!(line.contains("attention over 655") && line.contains("the scores of one head"), "{line}");
    assert!(!out.exists(), "a failed run created --out");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Non-finite results

#[test]
fn non_finite_logits_and_losses_are_errors_naming_the_image_or_step() {
    let dir = scratch("non-finite");
    let data = good_data(&dir);
    let model = fixture("vit_tiny");
    // A finite adapter whose classifier overflows f32: every logit is ±inf.
    let huge = adapter_copy("lora_v4", &dir);
    edit_tensors(&huge.join("adapter_model.safetensors"), |t| {
        let w = t.iter_mut().find(|(k, ..)| k == "base_model.model.classifier.weight").expect("classifier");
        w.3 = f32_bytes(&[3e38; 80]);
    });
    let (m, h, d) = (s(&model), s(&huge), s(&data));
    let logits = dir.join("logits.safetensors");
    let eval = ["eval", "--model", m, "--adapter", h, "--data", d, "--logits-out", s(&logits)];
    // The model alone computes the image finitely: the adapter's file is named, not the data.
    let culprits = ["lora_v4/adapter_model.safetensors", "image 0 of", "data.safetensors", "model alone"];
    let line = check_failure(&run(&eval), INPUT, &culprits, false);
    assert!(line.contains("inf") || line.contains("NaN"), "{line}");
    assert!(!logits.exists(), "logits written for a failed evaluation");
    // So is it when training starts from it: a loss that is not finite before any update
    // comes from the inputs, not from a divergence.
    let out = dir.join("out");
    check_failure(&run(&train_args(m, h, d, s(&out), &["--no-shuffle"])), INPUT, &culprits, false);
    assert!(!out.exists(), "a refused run created --out");
    // Data too large for f32 arithmetic at the first step names the data file and the image.
    let huge_data = dir.join("huge.safetensors");
    write_data(&huge_data, [2, 3, 8, 8], &[0, 1]);
    edit_tensors(&huge_data, |t| {
        let p = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        let mut values = vec![0.5f32; 2 * 192];
        values[192..].fill(3e38);
        p.3 = f32_bytes(&values);
    });
    let lora = fixture("adapters/lora_v4");
    let args = train_args(m, s(&lora), s(&huge_data), s(&out), &["--no-shuffle", "--batch-size", "2"]);
    check_failure(&run(&args), INPUT, &["huge.safetensors", "logits for image 1", "normalisation"], false);
    assert!(!out.exists(), "a refused run created --out");
    // So does such data at a later step, which no update (at a learning rate of 1e-30) made
    // non-finite: the model alone cannot compute that image.
    let later = ["--no-shuffle", "--batch-size", "1", "--epochs", "1", "--lr", "1e-30", "--optimizer", "sgd"];
    let args = ["train", "--model", m, "--init", s(&lora), "--data", s(&huge_data), "--out", s(&out)];
    let args = [&args[..], &later[..]].concat();
    check_failure(&run(&args), INPUT, &["huge.safetensors", "logits for image 1", "normalisation"], false);
    assert!(!out.exists(), "a refused run created --out");
    // Eval data whose logits overflow (finite pixels of 3e38) is refused before training,
    // naming the file and the image: nothing is trained, and the adapter that --force would
    // replace is kept byte for byte (it was replaced, then the run failed, before).
    let loud = dir.join("loud.safetensors");
    write_data(&loud, [2, 3, 8, 8], &[0, 1]);
    edit_tensors(&loud, |t| {
        let p = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        p.3 = f32_bytes(&[3e38; 2 * 192]);
    });
    copy_dir(&lora, &out);
    let before = snapshot(&out);
    let failed = run(&train_args(m, s(&lora), d, s(&out), &["--eval-data", s(&loud), "--force"]));
    check_failure(&failed, INPUT, &["loud.safetensors", "logits for image 0", "normalisation"], false);
    assert!(failed.stdout.is_empty(), "{}", String::from_utf8_lossy(&failed.stdout));
    assert_eq!(snapshot(&out), before, "the previous adapter is kept");
    std::fs::remove_dir_all(&out).expect("remove the adapter");
    // Only the third image overflows, in the third batch of one: the message names it.
    let third = dir.join("third.safetensors");
    write_data(&third, [3, 3, 8, 8], &[0, 1, 2]);
    edit_tensors(&third, |t| {
        let p = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        let mut values = vec![0.5f32; 3 * 192];
        values[2 * 192..].fill(3e38);
        p.3 = f32_bytes(&values);
    });
    let eval = ["eval", "--model", m, "--adapter", s(&lora), "--data", s(&third), "--batch-size", "1"];
    check_failure(&run(&eval), INPUT, &["third.safetensors", "logits for image 2"], false);
    // One pixel of 1e20: the embeddings stay finite, but a LayerNorm's variance overflows;
    // its output is not finite (PyTorch's is NaN), not a quiet β, so this is caught too.
    let spike = dir.join("spike.safetensors");
    write_data(&spike, [3, 3, 8, 8], &[0, 1, 2]);
    edit_tensors(&spike, |t| {
        let p = t.iter_mut().find(|(k, ..)| k == "pixel_values").expect("pixels");
        let mut values = vec![0.5f32; 3 * 192];
        values[192 + 40] = 1e20;
        p.3 = f32_bytes(&values);
    });
    let eval = ["eval", "--model", m, "--adapter", s(&lora), "--data", s(&spike)];
    check_failure(&run(&eval), INPUT, &["spike.safetensors", "logits for image 1", "1e20", "normalisation"], false);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn merges_that_overflow_f32_are_refused_and_keep_the_previous_model() {
    let dir = scratch("merge-overflow");
    let model = fixture("vit_tiny");
    let out = dir.join("merged");
    let lora = fixture("adapters/lora_v4");
    let (m, o) = (s(&model), s(&out));
    let ok = run(&["merge", "--model", m, "--adapter", s(&lora), "--out", o]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    // A finite adapter whose change to one weight is beyond f32 (s · Σ_r B A ≈ 1e39).
    let huge = adapter_copy("lora_v4", &dir);
    edit_tensors(&huge.join("adapter_model.safetensors"), |t| {
        for (key, _, shape, bytes) in t.iter_mut() {
            if key.starts_with("base_model.model.vit.encoder.layer.1.output.dense.lora_") {
                *bytes = f32_bytes(&vec![1e19; shape.iter().product()]);
            }
        }
    });
    let merge = ["merge", "--model", m, "--adapter", s(&huge), "--out", o, "--force"];
    let line = check_failure(
        &run(&merge),
        INPUT,
        &["lora_v4/adapter_model.safetensors", "vit.encoder.layer.1.output.dense.weight", "inf"],
        false,
    );
    assert!(line.contains("eval --adapter"), "{line}");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before, "the previous merge is kept");
    // An adapter whose merged weights are finite but whose outputs are not (a classifier of
    // 3e38, as `eval` refuses it): refused, naming its file, by a plain image's logits.
    let loud = dir.join("loud");
    copy_dir(&fixture("adapters/lora_v4"), &loud);
    edit_tensors(&loud.join("adapter_model.safetensors"), |t| {
        let w = t.iter_mut().find(|(k, ..)| k == "base_model.model.classifier.weight").expect("classifier");
        w.3 = f32_bytes(&[3e38; 80]);
    });
    let merge = ["merge", "--model", m, "--adapter", s(&loud), "--out", o, "--force"];
    check_failure(&run(&merge), INPUT, &["loud/adapter_model.safetensors", "plain image", "f32"], false);
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before, "the previous merge is kept");
    // A model whose own weights do that (its last MLP's output) is named instead, by merge
    // and by eval.
    let broken = model_copy(&dir);
    edit_tensors(&broken.join("model.safetensors"), |t| {
        let w = t.iter_mut().find(|(k, ..)| k == "vit.encoder.layer.1.output.dense.weight").expect("fc2");
        w.3 = f32_bytes(&[3e38; 16 * 24]);
    });
    let b = s(&broken);
    let merge = ["merge", "--model", b, "--adapter", s(&lora), "--out", o, "--force"];
    check_failure(&run(&merge), INPUT, &["model/model.safetensors", "its weights", "plain image"], false);
    let data = good_data(&dir);
    let eval = ["eval", "--model", b, "--data", s(&data)];
    check_failure(&run(&eval), INPUT, &["model/model.safetensors", "model's weights", "image 0 of"], false);
    std::fs::remove_dir_all(&dir).ok();
}

/// A model whose weights are small but whose one image is not (a 262144² pixel image in
/// 256² patches, width 1: 2²⁰ + 1 tokens, 2³⁶ pixels) merges; the plain image that checks the
/// merged logits is skipped with a note, not allocated (an aborted allocation before). So is
/// one whose image fits but whose attention over 65,537 tokens no device computes at once
/// (past a CPU adapter's loop limit, or past one tensor for one head's scores).
#[test]
fn a_merge_whose_one_image_does_not_fit_skips_the_plain_image() {
    merge_skips_the_plain_image("merge-huge-image", 1, [262_144, 262_144], [256, 256]);
    merge_skips_the_plain_image("merge-long-attention", 4, [4096, 4096], [16, 16]);
}

fn merge_skips_the_plain_image(name: &str, width: usize, image_size: [usize; 2], patch_size: [usize; 2]) {
    let dir = scratch(name);
    let config = peft_wgpu::nn::VitConfig {
        hidden_size: width,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        intermediate_size: width,
        image_size,
        patch_size,
        num_channels: 1,
        layer_norm_eps: 1e-12,
        qkv_bias: true,
        num_labels: 2,
        id2label: Vec::new(),
        problem_type: None,
    };
    let model = dir.join("model");
    peft_wgpu::nn::VitWeights::random(&config, 3).expect("weights").save(&model).expect("save the model");
    let adapter = dir.join("lora");
    std::fs::create_dir_all(&adapter).expect("adapter folder");
    let cfg = r#"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "target_modules": ["query"]}"#;
    std::fs::write(adapter.join("adapter_config.json"), cfg).expect("config");
    let stem = "base_model.model.vit.encoder.layer.0.attention.attention.query";
    let (a, b) = (vec![0.5; width], vec![0.25; width]);
    write_tensors(
        &adapter.join("adapter_model.safetensors"),
        &[
            (&format!("{stem}.lora_A.weight"), Dtype::F32, vec![1, width], f32_bytes(&a)),
            (&format!("{stem}.lora_B.weight"), Dtype::F32, vec![width, 1], f32_bytes(&b)),
        ],
    );
    let out = dir.join("merged");
    let done = run(&["merge", "--model", s(&model), "--adapter", s(&adapter), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(err.contains("was not run on a plain image"), "{err}");
    let merged = peft_wgpu::nn::VitWeights::load(&out).expect("the merged model loads");
    let query = |w: &peft_wgpu::nn::VitWeights| {
        w.get("vit.encoder.layer.0.attention.attention.query.weight").expect("query").data[0]
    };
    let base = peft_wgpu::nn::VitWeights::load(&model).expect("the model loads");
    assert_eq!(query(&merged), query(&base) + 0.5 * 0.25, "W + s·B·A with s = 1");
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes at `path` a data file of `n` 3×8×8 images with `dtype` pixels (F32 or F16) and U8
/// labels whose header is right and whose data is a hole (a sparse file, no disk used);
/// returns its length.
#[cfg(target_os = "linux")]
fn sparse_data(path: &std::path::Path, n: u64, dtype: &str) -> u64 {
    use std::io::Write;
    let pixels = n * 3 * 8 * 8 * if dtype == "F16" { 2 } else { 4 };
    let header = format!(
        r#"{{"labels":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}},"pixel_values":{{"dtype":"{dtype}","shape":[{n},3,8,8],"data_offsets":[{n},{}]}}}}"#,
        n + pixels
    );
    let mut file = std::fs::File::create(path).expect("create");
    file.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| file.write_all(header.as_bytes()))
        .expect("header");
    let len = 8 + header.len() as u64 + n + pixels;
    file.set_len(len).expect("sparse data");
    len
}

/// A data file larger than the memory this machine has free is refused by name before it is
/// read, instead of an aborted allocation or the kernel's out-of-memory kill (a sparse file
/// of 769 GiB whose header is right).
#[cfg(target_os = "linux")]
#[test]
fn a_file_larger_than_free_memory_is_refused_by_name() {
    let dir = scratch("huge-data");
    let path = dir.join("huge.safetensors");
    sparse_data(&path, 1 << 30, "F32");
    let model = fixture("vit_tiny");
    fails(
        &["eval", "--model", s(&model), "--data", s(&path)],
        INPUT,
        &["huge.safetensors", "769.0 GiB of memory", "this process can still get"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The memory the system could still give, in bytes: `MemAvailable` and `SwapFree` of
/// `/proc/meminfo`.
#[cfg(target_os = "linux")]
fn free_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib = |field: &str| -> u64 {
        let line = meminfo.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/meminfo"));
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of KiB")
    };
    (kib("MemAvailable:") + kib("SwapFree:")) * 1024
}

/// A new adapter whose tensors each fit but together need more memory than the process can
/// get is refused by its config before any is drawn (and before the GPU is opened): FLoRA
/// cores of 20,000 × 20,000 (1.5 GiB each) on two layers under a 2 GiB address-space limit.
#[cfg(target_os = "linux")]
#[test]
fn a_new_adapter_larger_than_memory_is_refused_by_its_config() {
    let dir = scratch("adapter-memory");
    let config = dir.join("adapter_config.json");
    std::fs::write(&config, r#"{"peft_type": "FLORA", "r": [20000, 20000], "target_modules": ["query"]}"#)
        .expect("config");
    let (m, d) = (fixture("vit_tiny"), fixture("train_data.safetensors"));
    let args = ["train", "--model", s(&m), "--adapter-config", s(&config), "--data", s(&d), "--out"];
    let out = dir.join("out");
    let command = r#"ulimit -v 2097152; exec "$0" "$@""#;
    let done = std::process::Command::new("sh")
        .args(["-c", command, env!("CARGO_BIN_EXE_peft-wgpu")])
        .args(args)
        .args([s(&out), "--steps", "1"])
        .output()
        .expect("run under a memory limit");
    let line = check_failure(&done, INPUT, &["adapter_config.json", "`r`", "of adapter tensors"], true);
    assert!(line.contains("this process can still get") && line.contains("flora_core"), "{line}");
    assert!(!out.exists(), "a refused run created --out");
    std::fs::remove_dir_all(&dir).ok();
}

/// F16 pixels are converted to f32 beside the file's bytes: a data file that fits in free
/// memory but not with its f32 copy is refused by name before it is read, counting both (a
/// sparse file of about 0.6 of the free memory, whose copy takes twice that).
#[cfg(target_os = "linux")]
#[test]
fn a_half_precision_file_whose_copy_does_not_fit_is_refused_before_reading() {
    let free = free_memory();
    let dir = scratch("half-data");
    let n = free * 6 / 10 / 384; // 384 bytes of F16 pixels per 3×8×8 image
    let pixels = n * 384;
    let path = dir.join("half.safetensors");
    let len = sparse_data(&path, n, "F16");
    let needed = format!("{:.1} GiB of memory", (len + 2 * pixels) as f64 / f64::from(1u32 << 30));
    let model = fixture("vit_tiny");
    fails(&["eval", "--model", s(&model), "--data", s(&path)], INPUT, &["half.safetensors", &needed]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A model whose file fits in free memory but not with its tensors in f32 is refused by name
/// before the file is read (a half-precision model converts to twice its size): here a
/// config whose f32 tensors take about 0.9 of the free memory, beside a sparse weights file
/// of 0.6 of it, which is never opened.
#[cfg(target_os = "linux")]
#[test]
fn a_model_whose_f32_copies_do_not_fit_is_refused_before_reading() {
    let free = free_memory();
    // One layer with intermediate_size = hidden_size: six [h, h] matrices of f32.
    let hidden = ((free as f64 * 0.9 / 24.0).sqrt() as u64).max(64);
    let dir = scratch("half-model");
    let config = format!(
        r#"{{"model_type": "vit", "hidden_size": {hidden}, "num_hidden_layers": 1, "num_attention_heads": 1,
            "intermediate_size": {hidden}, "image_size": 2, "patch_size": 1, "num_channels": 1}}"#
    );
    std::fs::write(dir.join("config.json"), config).expect("config");
    let weights = std::fs::File::create(dir.join("model.safetensors")).expect("weights");
    weights.set_len(free * 6 / 10).expect("sparse weights");
    let data = fixture("train_data.safetensors");
    fails(
        &["eval", "--model", s(&dir), "--data", s(&data)],
        INPUT,
        &["model.safetensors", "its tensors in f32", "of memory", "this process can still get"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
