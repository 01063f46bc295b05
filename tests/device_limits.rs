//! The device side of "hard to misuse" (SPEC §14): tensors beyond what one binding, one
//! buffer or u32 element indices allow are refused by name before anything is dispatched, an
//! overflowing shape is the same error rather than a panic, a lost device turns into errors
//! (not a hang or an abort), so does a wait past its limit, a diverging run stops with the
//! step, and uploads larger than the staging budget arrive whole.

mod common;

use std::path::Path;

use peft_wgpu::adapters::Adapter;
use peft_wgpu::io::Dataset;
use peft_wgpu::nn::Vit;
use peft_wgpu::optim::OptimizerKind;
use peft_wgpu::train::{BatchOrder, TrainOptions, train};
use peft_wgpu::{Error, Tensor};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn tensors_beyond_the_device_are_refused_by_name() {
    let gpu = common::gpu();
    let (max, limit) = gpu.max_tensor_bytes();
    assert!(max >= 16 << 20, "an implausible limit: {max} bytes ({limit})");
    let elements = usize::try_from(max / 4 + 1).expect("fits usize on 64-bit");
    match Tensor::zeros(&gpu, &[elements]) {
        Err(Error::TooLarge { bytes, max: m, limit: l, what }) => {
            assert_eq!((bytes, m, l), (4 * elements as u64, max, limit));
            assert!(what.contains(&format!("[{elements}]")), "{what}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Shapes whose size overflows are the same error, never an arithmetic panic.
    for shape in [vec![usize::MAX, 2], vec![1 << 40, 1 << 40, 1 << 40], vec![usize::MAX]] {
        let e = Tensor::zeros(&gpu, &shape).expect_err("overflowing shape");
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{shape:?}")), "{e}");
    }
    // A batch past the device's workgroups per grid axis (65,535 on most) is an error naming
    // the kernel and the count, not a validation failure.
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let a = Tensor::zeros(&gpu, &[max + 1, 2, 2]).expect("a small tensor of many matrices");
    let spec = peft_wgpu::ops::matmul::MatmulSpec::new();
    match peft_wgpu::ops::matmul::matmul(&gpu, &a, &a, spec, None, None) {
        Err(e @ Error::TooManyWorkgroups { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("{} workgroups", max + 1))
                    && text.contains("max_compute_workgroups_per_dimension"),
                "{text}"
            );
        }
        other => panic!("expected TooManyWorkgroups, got {other:?}"),
    }
    // The device still works afterwards.
    let t = Tensor::from_slice(&gpu, &[1.0, 2.0], &[2]).expect("small tensor");
    assert_eq!(gpu.read(&t).expect("read"), vec![1.0, 2.0]);
}

#[test]
fn a_lost_device_gives_errors_not_a_hang_or_an_abort() {
    let gpu = common::gpu();
    let t = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).expect("tensor");
    gpu.sync().expect("sync before");
    gpu.device().destroy();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let doubled = peft_wgpu::ops::elementwise::scale(&gpu, &t, 2.0)?;
        gpu.read(&doubled)
    }));
    match result {
        Ok(Err(e)) => assert_eq!(e.kind(), peft_wgpu::ErrorKind::Device, "{e}"),
        Ok(Ok(v)) => panic!("work on a destroyed device returned {v:?}"),
        Err(_) => panic!("work on a destroyed device panicked"),
    }
    // And every later check says what happened.
    for e in [gpu.sync().expect_err("sync"), gpu.check().expect_err("check")] {
        assert!(matches!(e, Error::DeviceLost { .. }) && e.to_string().contains("destroyed"), "{e}");
    }
}

#[test]
fn a_wait_past_its_limit_is_an_error_and_the_work_still_finishes() {
    let gpu = common::gpu();
    if std::env::var_os("PEFT_WGPU_WAIT_SECONDS").is_none() {
        // 600 s on a GPU; none on a CPU adapter, whose long submissions are honest work.
        let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
        let want = (!cpu).then_some(std::time::Duration::from_secs(600));
        assert_eq!(gpu.wait_limit(), want, "the default limit");
    }
    // Eight chained 512³ products: milliseconds on a discrete GPU, far more than the
    // microsecond allowed below anywhere.
    let n = 512;
    let mut rng = common::Rng::new(7);
    let scale = 1.0 / (n as f64).sqrt();
    let a = Tensor::from_slice(&gpu, &rng.normal_vec(n * n, 0.0, scale), &[n, n]).expect("a");
    let run = || -> peft_wgpu::Result<Tensor> {
        let mut c = a.clone();
        for _ in 0..8 {
            c = peft_wgpu::ops::matmul::matmul(&gpu, &c, &a, Default::default(), None, None)?;
        }
        Ok(c)
    };
    let c = run().expect("record");
    gpu.set_wait_limit(Some(std::time::Duration::from_micros(1)));
    let e = gpu.read(&c).expect_err("a read that cannot finish in a microsecond");
    assert_eq!(e.kind(), peft_wgpu::ErrorKind::Device, "{e}");
    let text = e.to_string();
    assert!(text.contains("finished none of its work") && text.contains("PEFT_WGPU_WAIT_SECONDS"), "{text}");
    // The work was not cancelled: without a limit the same tensor reads back, and equals a
    // second run of the same products.
    gpu.set_wait_limit(None);
    let first = gpu.read(&c).expect("read after the timeout");
    let second = gpu.read(&run().expect("again")).expect("second run");
    assert!(first.iter().all(|v| v.is_finite()) && first.iter().any(|&v| v != 0.0));
    assert_eq!(first, second);
}

#[test]
fn a_diverging_run_stops_with_the_step_and_undoes_the_update_behind_it() {
    let gpu = common::gpu();
    let vit = Vit::load(&gpu, &fixtures().join("vit_tiny")).expect("model");
    let adapter = Adapter::load(&gpu, &fixtures().join("adapters/lora_v4"), &vit).expect("adapter");
    let n = 4;
    let pixels: Vec<f32> = (0..n * 3 * 8 * 8).map(|i| (i % 13) as f32 / 13.0).collect();
    let data = Dataset::from_parts(Path::new("mem"), [n, 3, 8, 8], pixels, vec![0, 1, 2, 3]).expect("data");
    let options = TrainOptions {
        steps: 10,
        batch_size: 2,
        lr: 1e30,
        optimizer: OptimizerKind::Sgd { weight_decay: None },
        order: BatchOrder::Sequential,
        seed: 0,
        micro_batch: None,
    };
    let mut seen = Vec::new();
    let e = train(&gpu, &vit, &adapter, &data, &options, &mut |r| seen.push(r.step)).expect_err("diverges");
    let step = match e {
        Error::NonFiniteLoss { step, value } => {
            assert!(!value.is_finite());
            assert_eq!(seen, (0..step).collect::<Vec<_>>(), "steps reported before the bad one");
            assert!(step >= 1, "step 0 has a finite loss with these weights");
            // The message counts steps from 1, as the progress bar does.
            assert!(e.to_string().contains(&format!("step {} of the run", step + 1)), "{e}");
            step
        }
        other => panic!("expected NonFiniteLoss, got {other}"),
    };
    // The update that led to the non-finite loss (the previous step's) and those after it
    // were undone: every value is finite, and the adapter gives the previous step's batch a
    // finite loss again, as it did when that step ran.
    for p in adapter.trainable() {
        let v = gpu.read(&p.tensor).expect("read");
        assert!(v.iter().all(|x| x.is_finite()), "{} holds non-finite values after the stop", p.key);
    }
    let rows = [(2 * (step - 1)) % n, (2 * (step - 1) + 1) % n];
    let per = 3 * 8 * 8;
    let batch_pixels: Vec<f32> = rows.iter().flat_map(|&r| data.pixels[r * per..(r + 1) * per].to_vec()).collect();
    let labels: Vec<u32> = rows.iter().map(|&r| data.labels[r]).collect();
    let batch = Dataset::from_parts(Path::new("mem"), [2, 3, 8, 8], batch_pixels, labels).expect("batch");
    let report = peft_wgpu::train::evaluate(&gpu, &vit, Some(&adapter), &batch, 2).expect("evaluate");
    assert!(report.mean_loss.is_finite() && report.first_non_finite.is_none(), "{report:?}");
}

/// Uploads past the staging budget (256 MiB pending, then submitted and waited for) arrive
/// whole and in order: five tensors of 80 MiB, each with its own values, read back in full.
#[test]
fn uploads_past_the_staging_budget_arrive_whole() {
    let gpu = common::gpu();
    let n = 20 << 20; // 80 MiB of f32
    let tensors: Vec<(f32, Tensor)> = (0..5)
        .map(|k| {
            let base = k as f32 * 1e6;
            let data: Vec<f32> = (0..n).map(|i| base + (i % 1000) as f32).collect();
            (base, Tensor::from_slice(&gpu, &data, &[n]).expect("upload"))
        })
        .collect();
    for (base, t) in &tensors {
        let back = gpu.read(t).expect("read back");
        let wrong = back.iter().enumerate().find(|&(i, &v)| v != base + (i % 1000) as f32);
        assert!(wrong.is_none(), "tensor {base}: element {:?} differs", wrong);
    }
}

/// An upload large enough to wait for its staging (past 256 MiB) that times out is kept as
/// an error for the next check, not dropped: the device that stopped answering is reported.
#[test]
fn an_upload_wait_past_its_limit_is_reported_by_the_next_check() {
    let gpu = common::gpu();
    gpu.set_wait_limit(Some(std::time::Duration::from_nanos(1)));
    let n = 20 << 20; // 80 MiB of f32; the fourth crosses the staging budget
    let data = vec![1.5f32; n];
    let tensors: Vec<Tensor> = (0..4).map(|_| Tensor::from_slice(&gpu, &data, &[n]).expect("upload")).collect();
    gpu.set_wait_limit(None);
    let e = gpu.sync().expect_err("the upload's wait timed out");
    assert_eq!(e.kind(), peft_wgpu::ErrorKind::Device, "{e}");
    assert!(e.to_string().contains("finished none of its work"), "{e}");
    // The work itself went on: the tensors arrive whole.
    for t in &tensors {
        assert!(gpu.read(t).expect("read back").iter().all(|&v| v == 1.5));
    }
}
