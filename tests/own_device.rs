//! A device the application opened and hands over with `Gpu::from_device`: both sides keep
//! working on it, and each side's errors reach that side only (the application's
//! uncaptured-error handler is never replaced, nor fed this crate's errors).

use std::sync::{Arc, Mutex};

use peft_wgpu::ops::elementwise::scale;
use peft_wgpu::{ErrorKind, Gpu, Kernel, Tensor};

/// A device opened the way an application would, with what peft-wgpu needs on top.
fn app_device() -> (wgpu::Device, wgpu::Queue) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU tests need a wgpu adapter; on headless Linux: apt-get install -y mesa-vulkan-drivers libvulkan1");
    let limits = Gpu::required_limits(&adapter.limits()).expect("the adapter meets peft-wgpu's limits");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the application's device"),
        required_features: Gpu::required_features(),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device");
    (device, queue)
}

/// The application's handler: every uncaptured error, as text.
fn watch(device: &wgpu::Device) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().expect("lock").push(e.to_string())));
    seen
}

/// Adopts `device` with new buffers poisoned with NaN, so a dispatch that does not run leaves
/// NaN behind rather than a pooled buffer's old, right-looking values.
fn adopt(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
    let gpu = Gpu::from_device(device, queue).expect("adopt the device");
    gpu.set_poison_new_buffers(true);
    gpu
}

/// `[x, 2x, 3x] · 2`; each call gives other values, so no call can pass on an earlier one's.
fn doubled(gpu: &Gpu, x: f32) -> peft_wgpu::Result<Vec<f32>> {
    let t = Tensor::from_slice(gpu, &[x, 2.0 * x, 3.0 * x], &[3])?;
    gpu.read(&scale(gpu, &t, 2.0)?)
}

#[test]
fn an_adopted_device_keeps_the_applications_error_handler() {
    let (device, queue) = app_device();
    let seen = watch(&device);
    let gpu = adopt(device.clone(), queue);
    assert_eq!(doubled(&gpu, 1.0).expect("work on the adopted device"), vec![2.0, 4.0, 6.0]);
    assert!(seen.lock().expect("lock").is_empty(), "the application saw errors: {seen:?}");

    // The application's own mistake (a mappable storage buffer) reaches its handler, and
    // this crate does not report it as its own.
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("the application's bad buffer"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert_eq!(seen.lock().expect("lock").len(), 1, "the application's handler missed its error: {seen:?}");
    gpu.check().expect("the application's error is not reported by peft-wgpu");
    assert_eq!(doubled(&gpu, 5.0).expect("work after the application's error"), vec![10.0, 20.0, 30.0]);

    // Once the application destroys the device, this crate's work fails with an error of
    // its own (no panic), and the application's handler hears nothing of it.
    device.destroy();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doubled(&gpu, 7.0)));
    match result {
        Ok(Err(e)) => assert_eq!(e.kind(), ErrorKind::Device, "{e}"),
        Ok(Ok(v)) => panic!("work on a destroyed device returned {v:?}"),
        Err(_) => panic!("work on a destroyed device panicked"),
    }
    assert_eq!(seen.lock().expect("lock").len(), 1, "peft-wgpu's errors reached the application: {seen:?}");
}

#[test]
fn prepare_builds_every_kernel_the_device_can_run_and_names_the_first_it_cannot() {
    // Opened with only the features peft-wgpu requires: no subgroups, so the kernels that
    // share rows through subgroup operations cannot be built here.
    let (device, queue) = app_device();
    let seen = watch(&device);
    let gpu = adopt(device, queue);
    assert!(!gpu.features().contains(wgpu::Features::SUBGROUP));
    // An adopted device waits without a limit unless asked (its application's own work,
    // which this crate does not see finish, may hold the queue); a zero limit is none too.
    if std::env::var_os("PEFT_WGPU_WAIT_SECONDS").is_none() {
        assert_eq!(gpu.wait_limit(), None);
    }
    gpu.set_wait_limit(Some(std::time::Duration::ZERO));
    assert_eq!(gpu.wait_limit(), None);
    let (needs_subgroups, plain): (Vec<Kernel>, Vec<Kernel>) =
        Kernel::ALL.iter().partition(|k| k.spec().shader.uses_subgroups());
    assert!(!needs_subgroups.is_empty() && plain.len() > 20, "{} and {}", needs_subgroups.len(), plain.len());
    gpu.prepare(&plain).expect("every kernel without subgroup operations builds");
    for &kernel in &needs_subgroups {
        let e = gpu.prepare(&[Kernel::Fill, kernel]).expect_err("a subgroup kernel on a device without subgroups");
        let text = e.to_string();
        assert!(text.contains(kernel.spec().shader.file_name()), "{kernel:?}: {text}");
    }
    // The device still works, and the refusals reached the caller only.
    assert_eq!(doubled(&gpu, 1.5).unwrap(), [3.0, 6.0, 9.0]);
    assert!(seen.lock().unwrap().is_empty(), "the application's handler saw {:?}", seen.lock().unwrap());
}

#[test]
fn prepare_builds_every_kernel_on_the_default_device() {
    let gpu = Gpu::new()
        .expect("GPU tests need a wgpu adapter; on headless Linux: apt-get install -y mesa-vulkan-drivers libvulkan1");
    // peft-wgpu opens its own device with subgroups where the adapter has them (lavapipe,
    // NVIDIA, AMD, Intel and Apple GPUs do), and every kernel builds there.
    let subgroups = gpu.features().contains(wgpu::Features::SUBGROUP);
    let buildable: Vec<Kernel> =
        Kernel::ALL.iter().copied().filter(|k| subgroups || !k.spec().shader.uses_subgroups()).collect();
    gpu.prepare(&buildable).unwrap();
    // Kernels built before are taken from the cache; the device keeps working.
    gpu.prepare(&buildable).unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0, -2.0], &[2]).unwrap();
    assert_eq!(gpu.read(&scale(&gpu, &x, 3.0).unwrap()).unwrap(), [3.0, -6.0]);
}

#[test]
fn a_device_without_what_the_kernels_need_is_refused_by_name() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU tests need a wgpu adapter; on headless Linux: apt-get install -y mesa-vulkan-drivers libvulkan1");
    // No immediates.
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).expect("default device");
    let e = Gpu::from_device(device, queue).expect_err("a device without immediates");
    assert!(e.to_string().contains("IMMEDIATES"), "{e}");
    // Immediates, but WebGPU's default limits (too few for the kernels' immediates).
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_features: Gpu::required_features(),
            ..Default::default()
        }))
        .expect("device with default limits");
    let e = Gpu::from_device(device, queue).expect_err("a device with default limits");
    assert!(e.to_string().contains("max_immediate_size"), "{e}");
    // What the kernels need, but fewer bindings per group than a kernel's 8 buffers: refused
    // here, not by wgpu's validation at the first kernel that binds more.
    let mut limits = Gpu::required_limits(&adapter.limits()).expect("the adapter suits the kernels");
    limits.max_bindings_per_bind_group = 4;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: Gpu::required_features(),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device with 4 bindings per group");
    let e = Gpu::from_device(device, queue).expect_err("a device with 4 bindings per group");
    assert!(e.to_string().contains("max_bindings_per_bind_group"), "{e}");
}

#[test]
fn a_callback_that_wgpu_runs_inside_this_crates_submit_may_use_the_gpu() {
    let (device, queue) = app_device();
    let gpu = adopt(device.clone(), queue);
    // The application maps a buffer of its own; wgpu runs the callback in whichever call
    // polls the device next, here the submit inside this crate's read. The callback uses
    // the Gpu: it records an op and starts a read-back (which submits).
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("the application's buffer"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let pending = Arc::new(Mutex::new(None));
    let (from_callback, slot) = (gpu.clone(), Arc::clone(&pending));
    buffer.slice(..).map_async(wgpu::MapMode::Read, move |mapped| {
        mapped.expect("the application's mapping");
        let read = Tensor::from_slice(&from_callback, &[5.0, 6.0], &[2])
            .and_then(|t| scale(&from_callback, &t, 2.0))
            .map(|t| from_callback.read_later(&t));
        *slot.lock().expect("lock") = Some(read);
    });
    // On a thread, so a deadlock fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let worker = gpu;
    std::thread::spawn(move || {
        let _ = done.send(doubled(&worker, 1.0));
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(60)).expect("the read finished (no deadlock)");
    assert_eq!(result.expect("the read"), vec![2.0, 4.0, 6.0]);
    let read = pending.lock().expect("lock").take().expect("the callback ran");
    let values = read.expect("the callback's op").and_then(|r| r.wait()).expect("the callback's read-back");
    assert_eq!(values, vec![10.0, 12.0]);
}

/// A device that allows few workgroups per grid axis (an application may open one so): a
/// batch its grids cannot take at once is evaluated, and trained on, in smaller pieces with
/// the same results as a device that takes it whole.
#[test]
fn a_batch_the_devices_grid_cannot_take_is_evaluated_and_trained_in_pieces() {
    use peft_wgpu::nn::Vit;
    use peft_wgpu::train::evaluate;
    let narrow = limited_device(|l| l.max_compute_workgroups_per_dimension = 256);
    let wide = Gpu::new().expect("the default device");
    let (model, n) = (tiny_vit(), 600);
    let data = tiny_data(n, 5);
    let vit = Vit::load(&narrow, &model).unwrap();
    let split = evaluate(&narrow, &vit, None, &data, n).expect("split into pieces");
    let whole = evaluate(&wide, &Vit::load(&wide, &model).unwrap(), None, &data, n).expect("one batch");
    assert_eq!((split.images, split.accuracy), (whole.images, whole.accuracy));
    assert!((split.mean_loss - whole.mean_loss).abs() <= 1e-6 * whole.mean_loss.abs(), "{split:?} vs {whole:?}");
    let worst = split.logits.iter().zip(&whole.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "logits differ by {worst}");

    let lora = br#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#;
    let options = sgd(2, n, 1e-1);
    assert_same_steps(&trained(&narrow, lora, &data, &options), &trained(&wide, lora, &data, &options));
}

/// The tiny ViT of the fixtures: 8×8 images of three channels, 5 labels.
fn tiny_vit() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit_tiny")
}

/// `n` random images for the tiny ViT (from `seed`), labels cycling through the five.
fn tiny_data(n: usize, seed: u64) -> peft_wgpu::io::Dataset {
    let pixels = peft_wgpu::rng::Rng::new(seed).normal_vec(n * 3 * 8 * 8, 0.0, 1.0);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    peft_wgpu::io::Dataset::from_parts(std::path::Path::new("mem"), [n, 3, 8, 8], pixels, labels).unwrap()
}

/// A fresh adapter of the config `json` on `vit`.
fn fresh_adapter(gpu: &Gpu, vit: &peft_wgpu::nn::Vit, json: &[u8]) -> peft_wgpu::adapters::Adapter {
    use peft_wgpu::adapters::{Adapter, AdapterConfig};
    let path = std::path::Path::new("adapter_config.json");
    let config = AdapterConfig::from_json(&peft_wgpu::io::json::JsonFile::parse(path, json).unwrap()).unwrap();
    Adapter::new(gpu, config, path, vit, 0).unwrap()
}

/// `steps` SGD steps of `batch` images in order, at rate `lr`, each batch at once.
fn sgd(steps: usize, batch: usize, lr: f64) -> peft_wgpu::train::TrainOptions {
    peft_wgpu::train::TrainOptions {
        steps,
        batch_size: batch,
        lr,
        optimizer: peft_wgpu::OptimizerKind::sgd(),
        order: peft_wgpu::train::BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    }
}

/// What a training run did: each step's loss and pieces, then the trained tensors.
type Trained = (Vec<(f32, usize)>, Vec<Vec<f32>>);

/// A fresh adapter of the config `json` trained on the tiny ViT on `gpu`.
fn trained(gpu: &Gpu, json: &[u8], data: &peft_wgpu::io::Dataset, options: &peft_wgpu::train::TrainOptions) -> Trained {
    let vit = peft_wgpu::nn::Vit::load(gpu, &tiny_vit()).unwrap();
    let adapter = fresh_adapter(gpu, &vit, json);
    let mut reports = Vec::new();
    peft_wgpu::train::train(gpu, &vit, &adapter, data, options, &mut |r| reports.push((r.loss, r.pieces)))
        .expect("trains");
    (reports, adapter.trainable().iter().map(|p| gpu.read(&p.tensor).unwrap()).collect())
}

/// `split` took every step in pieces, `whole` in one, with the same losses and the same
/// parameters (to 1e-4 of each tensor's largest value).
fn assert_same_steps((split, split_values): &Trained, (whole, whole_values): &Trained) {
    assert!(split.iter().all(|&(_, pieces)| pieces > 1), "the steps were split: {split:?}");
    assert!(whole.iter().all(|&(_, pieces)| pieces == 1), "{whole:?}");
    for ((a, _), (b, _)) in split.iter().zip(whole) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "losses {split:?} vs {whole:?}");
    }
    for (i, (x, y)) in split_values.iter().zip(whole_values).enumerate() {
        let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "parameter {i} differs by {worst} (largest value {scale})");
    }
}

/// Training batches whose tensors exceed one binding (64 KiB; the MLP activations of 64
/// images of the tiny ViT take 104 KiB) is done in pieces whose gradients are summed: the
/// same steps as a device that takes the batch whole.
#[test]
fn training_batches_past_one_binding_accumulate_gradients() {
    let moppa = br#"{"peft_type": "MOPPA", "entropy_scale": 0.5, "modules_to_save": ["classifier"]}"#;
    let (data, options) = (tiny_data(64, 8), sgd(3, 64, 1e-1));
    let split = trained(&small_binding_device(1 << 16), moppa, &data, &options);
    assert_same_steps(&split, &trained(&limited_device(|_| {}), moppa, &data, &options));
}

/// The default adapter opened, adopted, with what peft-wgpu needs and its optional features,
/// under limits changed by `edit` (an application may open a device with lower limits).
fn limited_device(edit: impl FnOnce(&mut wgpu::Limits)) -> Gpu {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU tests need a wgpu adapter; on headless Linux: apt-get install -y mesa-vulkan-drivers libvulkan1");
    let mut limits = Gpu::required_limits(&adapter.limits()).expect("the adapter meets peft-wgpu's limits");
    edit(&mut limits);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: Gpu::required_features() | (adapter.features() & Gpu::optional_features()),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device");
    adopt(device, queue)
}

/// A device whose storage bindings hold at most `bytes` (DX12's hold 128 MiB).
fn small_binding_device(bytes: u64) -> Gpu {
    let gpu = limited_device(|l| l.max_storage_buffer_binding_size = bytes);
    assert_eq!(gpu.max_tensor_bytes().0, bytes);
    gpu
}

/// A model weight past what one tensor holds on the device is refused naming the weight,
/// before any upload: on a device whose bindings hold 64 KiB, the demo model with an MLP
/// whose intermediate matrices are one row past that.
#[test]
fn a_model_weight_beyond_the_device_is_refused_by_its_key() {
    use peft_wgpu::nn::{Vit, VitConfig, VitWeights};
    let small = small_binding_device(1 << 16);
    let base = peft_wgpu::demo::model::architecture();
    let intermediate = (1 << 16) / (4 * base.hidden_size) + 1;
    let config = VitConfig { intermediate_size: intermediate, ..base };
    let weights = VitWeights::random(&config, 0).expect("host weights");
    match Vit::from_weights(&small, &weights) {
        Err(peft_wgpu::Error::TooLarge { what, limit, max, .. }) => {
            assert_eq!((limit, max), ("max_storage_buffer_binding_size", 1 << 16));
            assert!(what.contains("vit.encoder.layer.0.intermediate.dense.weight"), "{what}");
        }
        other => panic!("expected TooLarge naming the weight, got {:?}", other.map(|_| "a model")),
    }
}

/// A device whose storage bindings are small (64 KiB): parameters that each fit one binding
/// but together not are refused by the optimizer by name, since it keeps them (with their
/// gradients and moments) in one flat buffer each; parameters that fit together are taken.
#[test]
fn the_optimizer_names_parameters_that_fit_one_by_one_but_not_together() {
    use peft_wgpu::optim::Optimizer;
    let small = small_binding_device(1 << 16);
    let params = [Tensor::zeros(&small, &[10_000]).unwrap(), Tensor::zeros(&small, &[10_000]).unwrap()];
    let Err(e) = Optimizer::new(&small, peft_wgpu::OptimizerKind::adamw(), 1e-3, &params) else {
        panic!("80,000 bytes in all were taken");
    };
    assert!(matches!(e, peft_wgpu::Error::TooLarge { bytes: 80_000, max: 65_536, .. }), "{e}");
    assert!(e.to_string().contains("20000 trainable values") && e.to_string().contains("2 tensors"), "{e}");
    assert!(Optimizer::new(&small, peft_wgpu::OptimizerKind::adamw(), 1e-3, &params[..1]).is_ok());
}

/// A new adapter whose tensors each fit one binding (64 KiB) but whose trainable values
/// together do not fit the optimizer's buffer is refused while it is built, naming its config
/// and the tensor that crosses the limit, before the rest are drawn: LoRA r 256 on every
/// linear layer of the tiny ViT makes 8,192 values for each attention projection, so the
/// third module's `A` is one too many.
#[test]
fn a_new_adapter_too_large_for_the_optimizer_is_refused_as_it_is_built() {
    use peft_wgpu::adapters::{Adapter, AdapterConfig};
    let small = small_binding_device(1 << 16);
    let vit = peft_wgpu::nn::Vit::load(&small, &tiny_vit()).unwrap();
    let path = std::path::Path::new("cfg/adapter_config.json");
    let config = |r: usize| {
        let json = format!(r#"{{"peft_type": "LORA", "r": {r}, "target_modules": "all-linear"}}"#);
        AdapterConfig::from_json(&peft_wgpu::io::json::JsonFile::parse(path, json.as_bytes()).unwrap()).unwrap()
    };
    match Adapter::new(&small, config(256), path, &vit, 0) {
        Err(peft_wgpu::Error::TooLarge { what, bytes, max, .. }) => {
            assert_eq!((bytes, max), (4 * (16_384 + 4_096), 65_536), "{what}");
            assert!(what.contains("20480 trainable values") && what.contains("cfg/adapter_config.json"), "{what}");
            assert!(what.contains("lora_A.weight`") && what.contains("lower the rank"), "{what}");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|a| a.num_trainable())),
    }
    // The dry run, which knows no device, bounds them by the kernels' own limit (2³² − 2¹⁷ values).
    let checked = Adapter::check(config(256), path, None, vit.config());
    assert!(checked.is_ok(), "{checked:?}");
    assert!(Adapter::new(&small, config(16), path, &vit, 0).is_ok(), "r 16 makes 13,312 values");
}

/// Evaluation in batches whose tensors exceed one binding (64 KiB; the MLP activations of
/// 64 images of the tiny ViT take 104 KiB) goes in smaller batches, with the same results.
#[test]
fn evaluation_splits_batches_past_one_binding() {
    let (n, data) = (64, tiny_data(64, 5));
    let evaluate = |gpu: &Gpu| {
        let vit = peft_wgpu::nn::Vit::load(gpu, &tiny_vit()).expect("model");
        peft_wgpu::train::evaluate(gpu, &vit, None, &data, n).expect("evaluation")
    };
    let (pieces, whole) = (evaluate(&small_binding_device(1 << 16)), evaluate(&limited_device(|_| {})));
    assert_eq!(pieces.logits.len(), n * 5);
    for (p, w) in pieces.logits.iter().zip(&whole.logits) {
        assert!((p - w).abs() <= 1e-6 * w.abs().max(1.0), "pieces {p} vs whole {w}");
    }
    assert_eq!(pieces.accuracy, whole.accuracy);
}

/// A device on which not even one image's activations fit one binding (1,600 bytes: the tiny
/// ViT's weights fit, one image's 17 tokens × 24 activations, 1,632 bytes, do not): training halves its
/// pieces down to one image, then stops with the device's refusal.
#[test]
fn training_stops_when_one_image_does_not_fit() {
    let gpu = small_binding_device(1600);
    let vit = peft_wgpu::nn::Vit::load(&gpu, &tiny_vit()).expect("the weights fit");
    let lora = fresh_adapter(&gpu, &vit, br#"{"peft_type": "LORA", "r": 2, "target_modules": ["query"]}"#);
    let (data, options) = (tiny_data(8, 2), sgd(1, 8, 1e-3));
    let before: Vec<Vec<f32>> = lora.trainable().iter().map(|p| gpu.read(&p.tensor).unwrap()).collect();
    let e = peft_wgpu::train::train(&gpu, &vit, &lora, &data, &options, &mut |_| panic!("no step ends"))
        .expect_err("too large");
    assert!(matches!(e, peft_wgpu::Error::TooLarge { max: 1600, .. }), "{e}");
    assert!(e.to_string().contains("shape [17, 24] needs 1632 bytes"), "one image's 17 tokens × 24: {e}");
    let after: Vec<Vec<f32>> = lora.trainable().iter().map(|p| gpu.read(&p.tensor).unwrap()).collect();
    assert_eq!(before, after, "nothing was updated");
}

/// Unfused attention whose `T×T` scores for the whole batch exceed one binding computes them
/// in pieces of whole image-heads, with the same output and gradients as in one piece; one
/// head's scores larger than a binding are refused by name.
#[test]
fn attention_scores_past_one_binding_are_computed_in_pieces() {
    use peft_wgpu::Tape;
    use peft_wgpu::nn::attention::{AttentionPath, multi_head_attention_with};
    use peft_wgpu::ops::elementwise::mul_var;
    use peft_wgpu::ops::sum::sum_var;
    // 3 images × 4 heads of 65×65 scores: 16,900 bytes each, 202,800 in all; 64 KiB holds 3.
    let (b, t, d, heads) = (3, 65, 32, 4);
    let mut rng = peft_wgpu::rng::Rng::new(11);
    let inputs: Vec<Vec<f32>> = (0..4).map(|_| rng.normal_vec(b * t * d, 0.0, 1.0)).collect();
    let run = |gpu: &Gpu| -> Vec<Vec<f32>> {
        let mut tape = Tape::new(gpu);
        let vars: Vec<_> =
            inputs[..3].iter().map(|x| tape.param(&Tensor::from_slice(gpu, x, &[b, t, d]).unwrap())).collect();
        let y =
            multi_head_attention_with(&mut tape, &vars[0], &vars[1], &vars[2], heads, AttentionPath::Unfused).unwrap();
        let w = tape.constant(&Tensor::from_slice(gpu, &inputs[3], &[b, t, d]).unwrap());
        let prod = mul_var(&mut tape, &y, &w).unwrap();
        let loss = sum_var(&mut tape, &prod).unwrap();
        let mut out = vec![gpu.read(y.value()).unwrap()];
        let grads = tape.backward(&loss).unwrap();
        out.extend(vars.iter().map(|v| gpu.read(grads.get(v).expect("a gradient")).unwrap()));
        out
    };
    let pieces = run(&small_binding_device(1 << 16));
    let whole = run(&limited_device(|_| {}));
    for (name, (p, w)) in ["y", "∂q", "∂k", "∂v"].iter().zip(pieces.iter().zip(&whole)) {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = p.iter().zip(w).fold(0.0f32, |m, (a, c)| m.max((a - c).abs()));
        assert!(worst <= 1e-6 * scale, "{name}: pieces and one piece differ by {worst} (max {scale})");
    }
    // 129 tokens: one head's scores (66,564 bytes) exceed 64 KiB.
    let small = small_binding_device(1 << 16);
    let mut tape = Tape::new(&small);
    let x = tape.constant(&Tensor::zeros(&small, &[1, 129, 8]).unwrap());
    let e = multi_head_attention_with(&mut tape, &x, &x, &x, 2, AttentionPath::Unfused).expect_err("one head too big");
    assert!(matches!(e, peft_wgpu::Error::TooLarge { bytes: 66_564, .. }), "{e}");
    assert!(e.to_string().contains("129 tokens"), "{e}");
    // No images or no tokens: an error, not a division by zero when sizing the pieces.
    for shape in [[0, 4, 8], [2, 0, 8]] {
        let x = tape.constant(&Tensor::zeros(&small, &shape).unwrap());
        let e = multi_head_attention_with(&mut tape, &x, &x, &x, 2, AttentionPath::Unfused).expect_err("empty");
        assert!(e.to_string().contains("B, T ≥ 1"), "{shape:?}: {e}");
    }
}
