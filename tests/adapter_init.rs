//! Fresh adapters (`Adapter::new`) on the tiny ViT start as SPEC §3–§7 say: every
//! distribution checked in mean, variance and shape over many seeds (so a wrong std, mean or
//! family fails, which `statistics_reject_wrong_distributions` proves), constants exact,
//! identity at start, and seeds reproducible.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Rng, fixture, gpu};
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::{NoHooks, Vit};
use peft_wgpu::{Gpu, Tape, Tensor};
use serde_json::json;

/// Seeds pooled per check: the smallest pool below holds 1600 values, enough to tell a
/// uniform from a normal of the same variance by its kurtosis.
const SEEDS: u64 = 200;

fn model(gpu: &Gpu) -> Vit {
    Vit::load(gpu, &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit_tiny")).expect("tiny ViT")
}

fn config(value: &serde_json::Value) -> AdapterConfig {
    let path = Path::new("adapter_config.json");
    AdapterConfig::from_json(&JsonFile::parse(path, value.to_string().as_bytes()).unwrap()).unwrap()
}

/// Every tensor of a fresh adapter (trainable and frozen) by file key, with its shape.
fn tensors(gpu: &Gpu, vit: &Vit, cfg: &serde_json::Value, seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let adapter = Adapter::new(gpu, config(cfg), Path::new("adapter_config.json"), vit, seed).unwrap();
    let all = adapter.trainable().iter().chain(adapter.frozen());
    all.map(|p| (p.key.clone(), (p.tensor.shape().to_vec(), gpu.read(&p.tensor).unwrap()))).collect()
}

/// Values of every seed's tensors, pooled into groups named by `group` (`None`: skipped).
fn pooled(
    gpu: &Gpu,
    vit: &Vit,
    cfg: &serde_json::Value,
    group: impl Fn(&str, &[usize]) -> Option<String>,
) -> BTreeMap<String, Vec<f64>> {
    let mut pools: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for seed in 0..SEEDS {
        for (key, (shape, values)) in tensors(gpu, vit, cfg, seed) {
            if let Some(g) = group(&key, &shape) {
                pools.entry(g).or_default().extend(values.iter().map(|&v| v as f64));
            }
        }
    }
    pools
}

/// Checks that `v` looks like draws from a distribution with this mean, std and kurtosis
/// (3 normal, 1.8 uniform): each sample moment within 5 standard errors.
fn check_moments(v: &[f64], mean: f64, std: f64, kurtosis: f64) -> Result<(), String> {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    let kurt = v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n / (var * var);
    let checks = [
        ("mean", m, mean, 5.0 * std / n.sqrt()),
        ("variance", var, std * std, 5.0 * std * std * ((kurtosis - 1.0) / n).sqrt()),
        ("kurtosis", kurt, kurtosis, 5.0 * (24.0 / n).sqrt()),
    ];
    for (what, got, want, allowed) in checks {
        if (got - want).abs() > allowed {
            return Err(format!("{what} {got:.5} vs {want:.5} (allowed ±{allowed:.5}, {n} values)"));
        }
    }
    Ok(())
}

fn assert_normal(what: &str, v: &[f64], mean: f64, std: f64) {
    assert!(v.len() >= 1500, "{what}: only {} values", v.len());
    check_moments(v, mean, std, 3.0).unwrap_or_else(|e| panic!("{what} ~ N({mean}, {std}²): {e}"));
}

/// `U(−bound, bound)`: every value inside, the extremes near the bounds, and the moments.
fn assert_uniform(what: &str, v: &[f64], bound: f64) {
    assert!(v.len() >= 1500, "{what}: only {} values", v.len());
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(max <= bound * (1.0 + 1e-7), "{what}: |value| {max} beyond the bound {bound}");
    assert!(max >= 0.99 * bound, "{what}: largest |value| {max} far inside the bound {bound}");
    check_moments(v, 0.0, bound / 3f64.sqrt(), 1.8).unwrap_or_else(|e| panic!("{what} ~ U(±{bound}): {e}"));
}

fn assert_all(what: &str, v: &[f64], value: f64) {
    assert!(!v.is_empty() && v.iter().all(|&x| x == value), "{what}: not all {value}");
}

#[test]
fn statistics_reject_wrong_distributions() {
    // The checks above on as few values as the smallest pool, fed the wrong thing.
    let mut rng = Rng::new(9);
    let n = 1600;
    let normal = |rng: &mut Rng, mean, std| -> Vec<f64> { (0..n).map(|_| mean + std * rng.normal()).collect() };
    assert!(check_moments(&normal(&mut rng, 0.0, 0.25), 0.0, 0.25, 3.0).is_ok(), "the right distribution passes");
    assert!(check_moments(&normal(&mut rng, 0.0, 0.5), 0.0, 0.25, 3.0).is_err(), "std 2× too large");
    assert!(check_moments(&normal(&mut rng, 0.0, 0.125), 0.0, 0.25, 3.0).is_err(), "std 2× too small");
    assert!(check_moments(&normal(&mut rng, 0.0, 0.25 * 1.5), 0.0, 0.25, 3.0).is_err(), "std 1.5× too large");
    assert!(check_moments(&normal(&mut rng, 0.1, 0.25), 0.0, 0.25, 3.0).is_err(), "mean off by 0.4 std");
    let uniform: Vec<f64> = (0..n).map(|_| rng.uniform_in(-0.25 * 3f64.sqrt(), 0.25 * 3f64.sqrt())).collect();
    assert!(check_moments(&uniform, 0.0, 0.25, 3.0).is_err(), "a uniform with the normal's std");
    assert!(check_moments(&uniform, 0.0, 0.25, 1.8).is_ok(), "… passes as a uniform");
    assert!(check_moments(&normal(&mut rng, 0.0, 0.25), 0.0, 0.25, 1.8).is_err(), "a normal as a uniform");
    // T_heat drawn as N(0.5, 0.1²) instead of N(0.05, 0.01²), logits as N(0, 2²).
    assert!(check_moments(&normal(&mut rng, 0.5, 0.1), 0.05, 0.01, 3.0).is_err());
    assert!(check_moments(&normal(&mut rng, 0.0, 2.0), 0.0, 1.0, 3.0).is_err());
}

#[test]
fn lora_a_is_kaiming_uniform_and_b_is_zero() {
    let gpu = gpu();
    let vit = model(&gpu);
    // Fan-ins: 16 (query, key, value, attention output, fc1), 24 (fc2), 12 (the 3×2×2 conv).
    let cfg = json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                     "target_modules": ["query", "key", "value", "dense", "projection"]});
    let pools = pooled(&gpu, &vit, &cfg, |key, shape| {
        let fan_in: usize = shape[1..].iter().product();
        if key.ends_with("lora_A.weight") { Some(format!("A fan_in {fan_in}")) } else { Some("B".into()) }
    });
    assert_eq!(pools.len(), 4, "{:?}", pools.keys());
    for fan_in in [12, 16, 24] {
        let v = &pools[&format!("A fan_in {fan_in}")];
        assert_uniform(&format!("lora_A, fan_in {fan_in}"), v, 1.0 / (fan_in as f64).sqrt());
    }
    assert_all("lora_B", &pools["B"], 0.0);
}

#[test]
fn lora_init_lora_weights_gaussian_and_false_as_peft() {
    let gpu = gpu();
    let vit = model(&gpu);
    // "gaussian": A ~ N(0, 1/r²), B = 0.
    let cfg = json!({"peft_type": "LORA", "r": 4, "target_modules": ["query", "fc2"], "init_lora_weights": "gaussian"});
    let pools = pooled(&gpu, &vit, &cfg, |key, _| Some(if key.ends_with("lora_A.weight") { "A" } else { "B" }.into()));
    assert_normal("gaussian lora_A", &pools["A"], 0.0, 0.25);
    assert_all("gaussian lora_B", &pools["B"], 0.0);
    // false, and null (which Python calls false too): both as fresh nn.Linear layers,
    // U(±1/√fan_in); B's fan-in is r.
    for init in [json!(false), json!(null)] {
        let cfg = json!({"peft_type": "LORA", "r": 4, "target_modules": ["query"], "init_lora_weights": init});
        let pools =
            pooled(&gpu, &vit, &cfg, |key, _| Some(if key.ends_with("lora_A.weight") { "A" } else { "B" }.into()));
        assert_uniform(&format!("{init} lora_A"), &pools["A"], 0.25);
        assert_uniform(&format!("{init} lora_B"), &pools["B"], 0.5);
    }
}

#[test]
fn lora_init_lora_weights_orthogonal_as_peft() {
    // PEFT's "orthogonal": Q orthogonal r × r, A = (G_A · Q[0::2])ᵀ, B = G_B · Q[1::2] with G
    // standard normal divided by 10, so B·A = 0 though neither factor is zero, and each
    // column of A (row of B) has the squared norm of a row of G: the mean square of the
    // entries is 1/2 · 1/100.
    let gpu = gpu();
    let vit = model(&gpu);
    let cfg =
        json!({"peft_type": "LORA", "r": 4, "target_modules": ["query", "fc2"], "init_lora_weights": "orthogonal"});
    let mut squares: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let mut first_a: Option<Vec<f32>> = None;
    for seed in 0..SEEDS / 4 {
        let all = tensors(&gpu, &vit, &cfg, seed);
        let stems: Vec<&str> = all.keys().filter_map(|k| k.strip_suffix(".lora_A.weight")).collect();
        assert_eq!(stems.len(), 2 * 2, "query and fc2 of both layers: {:?}", all.keys());
        for stem in stems {
            let (a_shape, a) = &all[&format!("{stem}.lora_A.weight")];
            let (b_shape, b) = &all[&format!("{stem}.lora_B.weight")];
            let (r, inp, out) = (a_shape[0], a_shape[1], b_shape[0]);
            assert_eq!((r, b_shape[1]), (4, 4), "{stem}");
            let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            let (na, nb) = (norm(a), norm(b));
            assert!(na > 0.0 && nb > 0.0, "seed {seed} {stem}: a factor is zero");
            for o in 0..out {
                for i in 0..inp {
                    let ba: f64 = (0..r).map(|j| b[o * r + j] as f64 * a[j * inp + i] as f64).sum();
                    assert!(ba.abs() <= 1e-6 * na * nb, "seed {seed} {stem}: (B·A)[{o}, {i}] = {ba:e}, not 0");
                }
            }
            for (name, v) in [("A", a), ("B", b)] {
                let e = squares.entry(name).or_default();
                e.0 += v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
                e.1 += v.len();
            }
            if stem.ends_with("query") && seed < 2 {
                match &first_a {
                    None => first_a = Some(a.clone()),
                    Some(earlier) => assert_ne!(earlier, a, "seeds 0 and 1 draw the same A"),
                }
            }
        }
    }
    for (name, (sum, n)) in squares {
        // Each value's square has mean 1/200; the pooled mean's standard error is below
        // 1/(100·√n) (a sum of n/2 squared normals of variance 1/100, over n).
        let mean = sum / n as f64;
        let allowed = 5.0 / (100.0 * (n as f64).sqrt());
        assert!(
            (mean - 0.005).abs() <= allowed,
            "orthogonal {name}: mean square {mean:.6}, expected 0.005 ± {allowed:.6}"
        );
    }
    // PEFT's refusals: an odd rank, and a conv (whose factors it would replace by matrices).
    let refused = |cfg: serde_json::Value| {
        Adapter::new(&gpu, config(&cfg), Path::new("adapter_config.json"), &vit, 0).expect_err("refused").to_string()
    };
    let e =
        refused(json!({"peft_type": "LORA", "r": 3, "target_modules": ["query"], "init_lora_weights": "orthogonal"}));
    assert!(e.contains("`r`") && e.contains("even rank"), "{e}");
    let e = refused(json!({"peft_type": "LORA", "r": 4, "rank_pattern": {"value": 5},
                           "target_modules": ["query", "value"], "init_lora_weights": "orthogonal"}));
    assert!(e.contains("`rank_pattern`") && e.contains("rank 5"), "{e}");
    // Its r × r basis costs r³ on the host: ranks past 1024 are refused before it is drawn.
    let e = refused(json!({"peft_type": "LORA", "r": 1026, "target_modules": ["query"],
                           "init_lora_weights": "orthogonal"}));
    assert!(e.contains("`r`") && e.contains("rank 1026") && e.contains("up to 1024"), "{e}");
    let e = refused(
        json!({"peft_type": "LORA", "r": 4, "target_modules": ["projection"], "init_lora_weights": "orthogonal"}),
    );
    assert!(e.contains("`init_lora_weights`") && e.contains("projection") && e.contains("convolution"), "{e}");
}

#[test]
fn flora_core_is_zero_and_factors_are_normal() {
    let gpu = gpu();
    let vit = model(&gpu);
    // r = 4: linear factors [16, 4] and [24, 4]; the conv's modes (16, 3, 2, 2) give ranks
    // (4, 3, 2, 2), so factors of rank 3 and 2 too.
    let cfg = json!({"peft_type": "FLORA", "r": 4, "scale": 2.0,
                     "target_modules": ["query", "value", "intermediate.dense", "projection"]});
    let pools = pooled(&gpu, &vit, &cfg, |key, shape| {
        if key.ends_with("flora_core") { Some("core".into()) } else { Some(format!("rank {}", shape[1])) }
    });
    assert_eq!(pools.len(), 4, "{:?}", pools.keys());
    assert_all("flora_core", &pools["core"], 0.0);
    for r in [2, 3, 4] {
        assert_normal(&format!("factors of rank {r}"), &pools[&format!("rank {r}")], 0.0, (0.5 / r as f64).sqrt());
    }
}

#[test]
fn moppa_starts_as_spec_section_3() {
    let gpu = gpu();
    let vit = model(&gpu);
    let cfg = json!({"peft_type": "MOPPA"});
    let pools = pooled(&gpu, &vit, &cfg, |key, _| {
        let leaf = key.rsplit('.').next().unwrap();
        Some(if leaf.starts_with("k_") { "k" } else { leaf }.to_string())
    });
    assert_eq!(pools.len(), 6, "{:?}", pools.keys());
    assert_all("K", &pools["k"], 1.0);
    assert_all("τ", &pools["temperature"], 5.0);
    assert_normal("T_heat", &pools["t_heat"], 0.05, 0.01);
    assert_normal("T_wave", &pools["t_wave"], 0.05, 0.01);
    assert_normal("T_poisson", &pools["t_poisson"], 0.5, 0.1);
    assert_normal("router logits", &pools["router_logits"], 0.0, 1.0);
    // Each layer draws its own values.
    let t = tensors(&gpu, &vit, &cfg, 0);
    let layer = |l: usize| &t[&format!("base_model.model.vit.encoder.layer.{l}.moppa.t_heat")].1;
    assert_ne!(layer(0), layer(1));
}

#[test]
fn rlp_starts_as_spec_section_6() {
    let gpu = gpu();
    let vit = model(&gpu);
    let cfg = json!({"peft_type": "RLP", "num_prompt_tokens": 10, "r": 4, "scale": 1.0});
    let pools = pooled(&gpu, &vit, &cfg, |key, _| Some(key.to_string()));
    assert_eq!(pools.len(), 3, "{:?}", pools.keys());
    assert_normal("P₀", &pools["rlp.prompt_init"], 0.0, 0.02);
    assert_normal("A", &pools["rlp.A"], 0.0, 0.5);
    assert_all("B", &pools["rlp.B"], 0.0);
    let adapter = Adapter::new(&gpu, config(&cfg), Path::new("c.json"), &vit, 0).unwrap();
    assert_eq!(adapter.frozen().len(), 1, "P₀ is frozen");
    assert_eq!(adapter.frozen()[0].key, "rlp.prompt_init");
}

#[test]
fn a_new_head_starts_at_zero() {
    let gpu = gpu();
    let vit = model(&gpu);
    for cfg in [
        json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "num_labels": 7}),
        json!({"peft_type": "MOPPA", "num_labels": 7, "modules_to_save": ["classifier"]}),
    ] {
        let adapter = Adapter::new(&gpu, config(&cfg), Path::new("c.json"), &vit, 3).unwrap();
        assert_eq!(adapter.num_labels(), 7);
        let t = tensors(&gpu, &vit, &cfg, 3);
        let (w_shape, w) = &t["base_model.model.classifier.weight"];
        let (b_shape, b) = &t["base_model.model.classifier.bias"];
        assert_eq!((w_shape.as_slice(), b_shape.as_slice()), (&[7, 16][..], &[7][..]));
        assert!(w.iter().chain(b).all(|&v| v == 0.0), "{cfg}: a new head starts at zero");
    }
    // Without num_labels a saved head starts as a copy of the base head.
    let cfg = json!({"peft_type": "LORA", "r": 2, "target_modules": ["query"], "modules_to_save": ["classifier"]});
    let t = tensors(&gpu, &vit, &cfg, 3);
    let base = gpu.read(&vit.weights()["classifier.weight"]).unwrap();
    assert_eq!(t["base_model.model.classifier.weight"].1, base);
}

fn logits(gpu: &Gpu, vit: &Vit, adapter: Option<&Adapter>) -> Vec<f32> {
    let f = fixture("adapters_expected.safetensors");
    let pixels = Tensor::from_slice(gpu, &f.f32("pixel_values"), &f.shape("pixel_values")).unwrap();
    let mut tape = Tape::inference(gpu);
    let base = vit.bind(&mut tape, false);
    let images = tape.constant(&pixels);
    let y = match adapter {
        Some(a) => {
            let bound = a.bind(&mut tape);
            vit.forward(&mut tape, &base, &images, &bound).unwrap()
        }
        None => vit.forward(&mut tape, &base, &images, &NoHooks).unwrap(),
    };
    gpu.read(y.value()).unwrap()
}

#[test]
fn fresh_lora_and_flora_are_the_identity() {
    let gpu = gpu();
    let vit = model(&gpu);
    let base = logits(&gpu, &vit, None);
    let targets = ["query", "key", "value", "dense", "projection", "classifier"];
    for cfg in [
        json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": targets}),
        json!({"peft_type": "FLORA", "r": 3, "scale": 2.0, "target_modules": targets}),
    ] {
        let adapter = Adapter::new(&gpu, config(&cfg), Path::new("c.json"), &vit, 1).unwrap();
        assert_eq!(logits(&gpu, &vit, Some(&adapter)), base, "{cfg}: a fresh adapter changes the logits");
    }
}

#[test]
fn seeds_are_reproducible() {
    let gpu = gpu();
    let vit = model(&gpu);
    for cfg in [
        json!({"peft_type": "LORA", "r": 4, "target_modules": ["query", "projection"], "modules_to_save": ["classifier"]}),
        json!({"peft_type": "FLORA", "r": 3, "target_modules": ["value", "projection"]}),
        json!({"peft_type": "MOPPA", "layers": [1]}),
        json!({"peft_type": "RLP", "num_prompt_tokens": 2, "r": 2}),
    ] {
        let a = tensors(&gpu, &vit, &cfg, 42);
        assert_eq!(a, tensors(&gpu, &vit, &cfg, 42), "{cfg}: the same seed gives the same tensors");
        assert_ne!(a, tensors(&gpu, &vit, &cfg, 43), "{cfg}: another seed gives other tensors");
    }
}
