//! The benchmark code path on tiny instances: every workload checks itself against the CPU
//! twins and reports; nothing here times anything or asserts on speed.

mod common;

use common::gpu;
use peft_wgpu::bench::{self, BenchOptions, WORKLOADS};
use peft_wgpu::ops::matmul::{MatmulSpec, matmul};
use peft_wgpu::{Gpu, Tensor};

#[test]
fn every_workload_runs_checks_and_reports_on_tiny_instances() {
    let gpu = gpu();
    let mut seen = Vec::new();
    let reports = bench::run(&gpu, &BenchOptions::tiny(), &mut |r| {
        eprintln!("{}", r.to_row());
        seen.push(r.name.clone());
    })
    .expect("bench runs");
    assert_eq!(seen, WORKLOADS, "every workload reports, in order, as it finishes");
    for r in &reports {
        assert!(r.ms.is_finite() && r.ms > 0.0, "{}: time {}", r.name, r.ms);
        assert_eq!(r.runs_ms.len(), 1, "{}: one timed run in tiny mode", r.name);
        assert!(r.dispatches > 0, "{}: no dispatch recorded", r.name);
        assert!(r.check_error < 2e-3, "{}: check error {}", r.name, r.check_error);
        let is_step = r.name.contains("train_step");
        assert_eq!(r.peak_bytes.is_some(), is_step, "{}: peak bytes only for training steps", r.name);
        let line: serde_json::Value = serde_json::from_str(&r.to_json()).expect("one JSON object per report");
        assert_eq!(line["name"], r.name.as_str());
        assert!(line["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{}: JSON ms", r.name);
        assert!(!r.to_row().contains('\n'), "{}: a table row is one line", r.name);
        let has_timer = gpu.timer().is_some();
        assert_eq!(r.gpu_ms.is_some(), has_timer, "{}: device time exactly where there are timestamps", r.name);
        if has_timer {
            assert!(line["gpu_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{}: JSON gpu_ms", r.name);
        }
    }
    let by_name = |n: &str| reports.iter().find(|r| r.name == n).expect("report present");
    assert!(by_name("matmul_1024").gflops.is_some_and(|g| g > 0.0));
    assert!(by_name("spectral_filter_64x14x14x768").gbps.is_some_and(|g| g > 0.0));
    let peak = |n: &str| by_name(n).peak_bytes.expect("peak bytes");
    // Full fine-tuning keeps AdamW state for every weight of the layer; LoRA and MoPPA do not.
    assert!(peak("vitb_block_full_train_step_b8") > peak("vitb_block_lora_train_step_b8"));
    assert!(peak("vitb_block_full_train_step_b8") > peak("vitb_block_moppa_train_step_b8"));
}

#[test]
fn bench_filter_selects_workloads() {
    let gpu = gpu();
    let options = BenchOptions { filter: Some("matmul".into()), ..BenchOptions::tiny() };
    let reports = bench::run(&gpu, &options, &mut |_| {}).expect("bench runs");
    assert_eq!(reports.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["matmul_1024"]);
    let none = BenchOptions { filter: Some("no such workload".into()), ..BenchOptions::tiny() };
    let e = bench::run(&gpu, &none, &mut |_| {}).expect_err("a filter that selects nothing");
    assert!(e.to_string().contains("part of no workload's name"), "{e}");
}

#[test]
fn gpu_timer_measures_the_work_between_its_timestamps() {
    let gpu = gpu();
    // lavapipe reports timestamp queries; so does every adapter this project targets.
    let timer = gpu.timer().expect("the adapter offers TIMESTAMP_QUERY");
    // Nothing to read before a start and a stop, nor a stop before any start.
    assert!(timer.elapsed_ms(&gpu).expect_err("no timestamps").to_string().contains("a start and then a stop"));
    assert!(timer.stop(&gpu).expect_err("no start").to_string().contains("no start"));
    timer.start(&gpu).expect("start");
    assert!(timer.elapsed_ms(&gpu).expect_err("no stop").to_string().contains("a start and then a stop"));
    let a = Tensor::from_slice(&gpu, &vec![0.5; 128 * 128], &[128, 128]).expect("upload");
    let time = |products: usize| {
        gpu.sync().expect("sync");
        let start = std::time::Instant::now();
        timer.start(&gpu).expect("start");
        for _ in 0..products {
            drop(matmul(&gpu, &a, &a, MatmulSpec::new(), None, None).expect("matmul"));
        }
        timer.stop(&gpu).expect("stop");
        gpu.sync().expect("sync");
        let wall = start.elapsed().as_secs_f64() * 1e3;
        (timer.elapsed_ms(&gpu).expect("timestamps"), wall)
    };
    let (none, _) = time(0);
    let (some, wall) = time(20);
    assert!(none >= 0.0 && some > 0.0, "device times {none} ms (no work) and {some} ms (20 products)");
    assert!(some <= wall * 1.05 + 0.1, "device time {some} ms beyond the wall time {wall} ms around it");
    assert!(some > none, "20 products took {some} ms of device time, no work {none} ms");
    // A timer times only the device that made it.
    let other = Gpu::new().expect("a second device");
    for e in [timer.start(&other).err(), timer.stop(&other).err(), timer.elapsed_ms(&other).err()] {
        assert!(e.expect("another Gpu is refused").to_string().contains("another Gpu"));
    }
}
