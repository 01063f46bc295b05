//! The training loop reads each step's loss only after submitting the next step: every
//! step is still reported in order with PyTorch's loss for it, and a step with a non-finite
//! loss stops the run with the adapter as it was before that step. `evaluate` gives
//! PyTorch's logits, loss and accuracy.

mod common;

use std::path::Path;

use common::{Rng, gpu};
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::Dataset;
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::Vit;
use peft_wgpu::train::{BatchOrder, StepReport, TrainOptions, train};
use peft_wgpu::{Error, Gpu, OptimizerKind};

fn model(gpu: &Gpu) -> Vit {
    Vit::load(gpu, &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit_tiny")).expect("tiny ViT")
}

fn lora(gpu: &Gpu, vit: &Vit) -> Adapter {
    lora_with(gpu, vit, r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}"#)
}

fn lora_with(gpu: &Gpu, vit: &Vit, json: &str) -> Adapter {
    let path = Path::new("adapter_config.json");
    let config = AdapterConfig::from_json(&JsonFile::parse(path, json.as_bytes()).unwrap()).unwrap();
    Adapter::new(gpu, config, path, vit, 3).unwrap()
}

/// Six random 8×8 images of three channels; image `huge_at` (if any) is scaled by 1e30, so
/// that its activations overflow f32 (finite pixels, which the data set's checks let pass).
fn data(huge_at: Option<usize>) -> Dataset {
    let mut rng = Rng::new(9);
    let mut pixels = rng.normal_vec(6 * 192, 0.0, 1.0);
    if let Some(i) = huge_at {
        pixels[i * 192..(i + 1) * 192].iter_mut().for_each(|p| *p *= 1e30);
    }
    Dataset::from_parts(Path::new("data"), [6, 3, 8, 8], pixels, vec![0, 1, 2, 3, 4, 0]).unwrap()
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        steps,
        batch_size: 2,
        lr: 1e-2,
        optimizer: OptimizerKind::adamw(),
        order: BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    }
}

fn values(gpu: &Gpu, adapter: &Adapter) -> Vec<Vec<f32>> {
    adapter.trainable().iter().map(|p| gpu.read(&p.tensor).unwrap()).collect()
}

/// A batch computed in pieces (`micro_batch`, the last piece smaller) takes the same steps as
/// the batch at once: each piece's mean loss weighted by its share, the gradients summed, and
/// LoRA's dropout masks (on the patch embedding's rows too) the whole batch's.
#[test]
fn a_batch_in_pieces_takes_the_steps_of_the_batch_at_once() {
    let gpu = gpu();
    let vit = model(&gpu);
    let json = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.3,
                   "target_modules": ["query", "value", "fc2", "vit.embeddings.patch_embeddings.projection"],
                   "modules_to_save": ["classifier"]}"#;
    let run = |micro_batch: Option<usize>| {
        let adapter = lora_with(&gpu, &vit, json);
        let opts = TrainOptions { batch_size: 8, optimizer: OptimizerKind::sgd(), lr: 0.5, micro_batch, ..options(3) };
        let mut seen = Vec::new();
        train(&gpu, &vit, &adapter, &data(None), &opts, &mut |r| seen.push((r.loss, r.pieces))).expect("trains");
        (seen, values(&gpu, &adapter))
    };
    let (whole, whole_values) = run(None);
    let (pieces, piece_values) = run(Some(3));
    assert_eq!(whole.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 1, 1]);
    assert_eq!(pieces.iter().map(|r| r.1).collect::<Vec<_>>(), [3, 3, 3], "8 images in pieces of 3, 3 and 2");
    for ((a, _), (b, _)) in pieces.iter().zip(&whole) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "losses in pieces {pieces:?} vs at once {whole:?}");
    }
    for (i, (p, w)) in piece_values.iter().zip(&whole_values).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = p.iter().zip(w).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "parameter {i}: pieces differ by {worst} (largest value {scale})");
    }
    // The updates moved the parameters: the comparison is not of two untouched adapters.
    let fresh = values(&gpu, &lora_with(&gpu, &vit, json));
    assert!(fresh.iter().zip(&whole_values).any(|(f, w)| f != w), "training changed nothing");
    let e = train(
        &gpu,
        &vit,
        &lora(&gpu, &vit),
        &data(None),
        &TrainOptions { micro_batch: Some(0), ..options(1) },
        &mut |_| {},
    )
    .expect_err("a micro batch of 0");
    assert!(e.to_string().contains("micro batch"), "{e}");
}

#[test]
fn every_step_is_reported_in_order_with_a_finite_loss() {
    let gpu = gpu();
    let vit = model(&gpu);
    let adapter = lora(&gpu, &vit);
    let mut seen: Vec<StepReport> = Vec::new();
    train(&gpu, &vit, &adapter, &data(None), &options(5), &mut |r| seen.push(*r)).unwrap();
    assert_eq!(seen.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(seen.iter().all(|r| r.loss.is_finite() && r.steps == 5 && r.images == 2), "{seen:?}");
}

#[test]
fn a_non_finite_loss_stops_the_run_and_undoes_its_step() {
    let gpu = gpu();
    let vit = model(&gpu);
    // Step 2 takes images 4 and 5 (sequential order, batch 2); image 4 overflows.
    let adapter = lora(&gpu, &vit);
    let mut seen = Vec::new();
    let err = train(&gpu, &vit, &adapter, &data(Some(4)), &options(4), &mut |r| seen.push(r.step)).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 2, .. }), "{err:?}");
    assert_eq!(seen, [0, 1], "steps before the bad one are reported, none after");
    // The adapter is where two clean steps leave it, although step 2 (and the update that
    // made it NaN) had been submitted before its loss was read.
    let clean = lora(&gpu, &vit);
    train(&gpu, &vit, &clean, &data(None), &options(2), &mut |_| {}).unwrap();
    let (got, want) = (values(&gpu, &adapter), values(&gpu, &clean));
    assert!(got.iter().flatten().all(|v| v.is_finite()), "the adapter holds non-finite values");
    assert_eq!(got, want, "the adapter differs from two clean steps");
}

#[test]
fn a_last_update_that_overflows_is_an_error_and_undone() {
    // Every loss is finite (the last one is computed before its update), but an SGD step with
    // a weight decay of 3e38 sends the parameters to infinity: the run must not end as if it
    // had succeeded.
    let gpu = gpu();
    let vit = model(&gpu);
    let adapter = lora(&gpu, &vit);
    let start = values(&gpu, &adapter);
    let opts =
        TrainOptions { steps: 1, lr: 100.0, optimizer: OptimizerKind::Sgd { weight_decay: Some(3e38) }, ..options(1) };
    let err = train(&gpu, &vit, &adapter, &data(None), &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::DivergedUpdate { step: 0, what } if what.contains("lora_")), "{err:?}");
    assert!(err.to_string().contains("step 1") && err.to_string().contains("undone"), "{err}");
    assert_eq!(values(&gpu, &adapter), start, "the adapter is as before the update");
    // Huge but finite parameters: only the loss they give shows the divergence. (B starts
    // non-zero, so both factors move and their product overflows.)
    let opts = TrainOptions { steps: 1, lr: 3e38, optimizer: OptimizerKind::sgd(), ..options(1) };
    let json = r#"{"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"], "init_lora_weights": false}"#;
    let adapter = lora_with(&gpu, &vit, json);
    let start = values(&gpu, &adapter);
    let err = train(&gpu, &vit, &adapter, &data(None), &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::DivergedUpdate { step: 0, what } if what.contains("loss")), "{err:?}");
    assert_eq!(values(&gpu, &adapter), start, "the adapter is as before the update");
}

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The loss each step reports (read one step late, while the next runs) is PyTorch's loss of
/// that step, MoPPA's decaying route term included: `--no-shuffle` SGD from every fixture
/// adapter (`scripts/fixtures_training.py`).
#[test]
fn reported_step_losses_equal_pytorchs() {
    let gpu = gpu();
    let vit = model(&gpu);
    let expected = common::fixture("training_expected.safetensors");
    let [steps, batch] = expected.ints("steps")[..] else { panic!("the fixture's `steps` is [steps, batch]") };
    let data = Dataset::load(&fixtures().join("train_data.safetensors")).expect("training data");
    let opts = TrainOptions {
        steps: steps as usize,
        batch_size: batch as usize,
        lr: expected.f64("lr")[0],
        optimizer: OptimizerKind::sgd(),
        order: BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    };
    for name in ["flora", "moppa", "rlp", "lora_v5", "lora_saved_containers"] {
        let adapter = Adapter::load(&gpu, &fixtures().join("adapters").join(name), &vit).expect("fixture adapter");
        let mut losses = Vec::new();
        train(&gpu, &vit, &adapter, &data, &opts, &mut |r| losses.push(r.loss)).unwrap();
        common::assert_close(
            &format!("{name}: step losses"),
            &losses,
            &expected.f64(&format!("{name}.loss")),
            1e-5,
            1e-6,
        );
    }
}

/// `evaluate` against PyTorch's logits and loss of the adapter fixtures, in batches of 2 over
/// 3 images (so the last batch is partial): the logits row by row, the mean cross-entropy,
/// and the accuracy as the share of rows whose PyTorch arg-max is the label.
#[test]
fn evaluate_gives_pytorchs_logits_loss_and_accuracy() {
    let gpu = gpu();
    let vit = model(&gpu);
    let f = common::fixture("adapters_expected.safetensors");
    let shape: [usize; 4] = f.shape("pixel_values").try_into().expect("4-D pixel values");
    for (name, labels_mod) in [("flora", 5), ("lora_v5", 5), ("rlp", 3)] {
        let labels: Vec<u32> = f.ints("labels").iter().map(|&l| l as u32 % labels_mod).collect();
        let data = Dataset::from_parts(Path::new("data"), shape, f.f32("pixel_values"), labels.clone()).unwrap();
        let adapter = Adapter::load(&gpu, &fixtures().join("adapters").join(name), &vit).expect("fixture adapter");
        let report = peft_wgpu::train::evaluate(&gpu, &vit, Some(&adapter), &data, 2).unwrap();
        let want = f.f64(&format!("{name}.logits"));
        assert_eq!((report.images, report.labels), (3, labels_mod as usize), "{name}");
        common::assert_close(&format!("{name}: logits"), &report.logits, &want, 1e-5, 1e-6);
        let loss = f.f64(&format!("{name}.loss"))[0];
        assert!(
            (report.mean_loss - loss).abs() <= 1e-5 * loss.abs(),
            "{name}: mean loss {} vs {loss}",
            report.mean_loss
        );
        let right = want
            .chunks(labels_mod as usize)
            .zip(&labels)
            .filter(|&(row, &label)| {
                let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
                best == Some(label as usize)
            })
            .count();
        assert_eq!(report.accuracy, right as f64 / 3.0, "{name}: accuracy");
    }
}

/// The shuffled order: each epoch a new permutation of every row (the identity or a repeat
/// of the last epoch would be a fault at 20 rows), seeded and reproducible, and a batch that
/// spans two epochs finishes one permutation before it starts the next.
#[test]
fn shuffled_batches_take_a_new_seeded_permutation_every_epoch() {
    use peft_wgpu::train::Batches;
    let epochs = |seed: u64, n: usize| {
        let mut b = Batches::new(BatchOrder::Shuffled { seed }, 20, 20);
        (0..n).map(|_| b.next_rows().unwrap()).collect::<Vec<_>>()
    };
    let [first, second] = <[Vec<usize>; 2]>::try_from(epochs(7, 2)).unwrap();
    let identity: Vec<usize> = (0..20).collect();
    for epoch in [&first, &second] {
        let mut sorted = epoch.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, identity, "an epoch takes every row once: {epoch:?}");
    }
    assert_ne!(first, identity, "the first epoch is not shuffled");
    assert_ne!(first, second, "the second epoch repeats the first");
    assert_eq!(epochs(7, 2), [first.clone(), second], "the same seed gives the same order");
    assert_ne!(epochs(8, 1)[0], first, "another seed gives another order");
    // 5 rows in batches of 3: rows 0–4 of the stream are one permutation, 5–9 the next.
    let mut b = Batches::new(BatchOrder::Shuffled { seed: 1 }, 5, 3);
    let stream: Vec<usize> = (0..4).flat_map(|_| b.next_rows().unwrap()).collect();
    for chunk in stream.chunks(5).take(2) {
        let mut sorted = chunk.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4], "every row once before any repeats: {stream:?}");
    }
}

/// LoRA dropout draws new masks every step, from the run's seed: on the same batch with a
/// negligible learning rate, each step's loss differs (one mask reused would repeat it), and
/// the same seed repeats the run exactly.
#[test]
fn dropout_masks_change_every_step_and_follow_the_seed() {
    let gpu = gpu();
    let vit = model(&gpu);
    let json = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
                   "lora_dropout": 0.5, "init_lora_weights": false}"#;
    let run = |seed: u64| {
        let adapter = lora_with(&gpu, &vit, json);
        let opts = TrainOptions { batch_size: 6, lr: 1e-12, optimizer: OptimizerKind::sgd(), seed, ..options(3) };
        let mut losses = Vec::new();
        train(&gpu, &vit, &adapter, &data(None), &opts, &mut |r| losses.push(r.loss)).unwrap();
        losses
    };
    let losses = run(5);
    for (i, a) in losses.iter().enumerate() {
        for b in &losses[i + 1..] {
            assert!((a - b).abs() > 1e-4 * a.abs(), "two steps gave the same loss (one mask?): {losses:?}");
        }
    }
    assert_eq!(run(5), losses, "the same seed repeats the run");
    assert_ne!(run(6), losses, "another seed draws other masks");
}
