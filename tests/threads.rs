//! A `Gpu` is `Send + Sync` and cheap to clone, so applications share it: between threads
//! that each run their own work, with a thread of their own polling the device, and with
//! `trim_pool` called while work is still recorded. Each must give every caller its own exact
//! results.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use peft_wgpu::ops::elementwise::{axpby, scale};
use peft_wgpu::{Gpu, Tensor};

/// Values whose doubling, eight halvings' inverse and sums stay exact in f32.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 + seed * 13) % 97) as f32 * 0.5 - 24.0).collect()
}

/// `x` → eight doublings → `y/256 + x`: `2x` exactly, after nine dependent kernels.
fn doubled_the_long_way(gpu: &Gpu, data: &[f32]) -> peft_wgpu::Result<Vec<f32>> {
    let x = Tensor::from_slice(gpu, data, &[data.len()])?;
    let mut y = x.clone();
    for _ in 0..8 {
        y = scale(gpu, &y, 2.0)?;
    }
    gpu.read(&axpby(gpu, 1.0 / 256.0, &y, 1.0, &x)?)
}

/// The first mismatch of `got` against `2·data`, as text.
fn first_wrong(got: &[f32], data: &[f32]) -> Option<String> {
    let i = got.iter().zip(data).position(|(g, d)| *g != 2.0 * d)?;
    Some(format!("[{i}] = {} expected {}", got[i], 2.0 * data[i]))
}

#[test]
fn threads_sharing_one_gpu_each_get_their_own_results() {
    let gpu = common::gpu();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let gpu = gpu.clone();
            std::thread::spawn(move || {
                for it in 0..400 {
                    let data = values(100 + (it * 37 + t * 101) % 1500, it + 1000 * t);
                    let got =
                        doubled_the_long_way(&gpu, &data).unwrap_or_else(|e| panic!("thread {t}, round {it}: {e}"));
                    if let Some(wrong) = first_wrong(&got, &data) {
                        panic!("thread {t}, round {it}: {wrong} (work of threads reached the queue out of order?)");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a thread failed");
    }
}

#[test]
fn an_application_polling_the_device_does_not_break_read_backs() {
    let gpu = common::gpu();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (device, stop) = (gpu.device().clone(), Arc::clone(&stop));
        // The application's own thread, polling the shared device: it may run the callbacks
        // of this crate's read-backs.
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = device.poll(wgpu::PollType::Poll);
            }
        })
    };
    let mut failures = Vec::new();
    for it in 0..5000 {
        let data = values(200 + it % 300, it);
        let result = Tensor::from_slice(&gpu, &data, &[data.len()])
            .and_then(|x| scale(&gpu, &x, 2.0))
            .and_then(|y| gpu.read(&y));
        match result {
            Ok(got) => failures.extend(first_wrong(&got, &data).map(|w| format!("round {it}: {w}"))),
            Err(e) => failures.push(format!("round {it}: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().expect("the polling thread");
    assert!(failures.is_empty(), "{} of 5000 read-backs failed, first: {}", failures.len(), failures[0]);
}

#[test]
fn trimming_the_pool_keeps_buffers_that_recorded_work_still_uses() {
    let gpu = common::gpu();
    let data = values(300, 3);
    let x = Tensor::from_slice(&gpu, &data, &[300]).expect("upload");
    let y = scale(&gpu, &x, 2.0).expect("scale");
    // x's buffer returns to the pool while the scale that reads it is not yet submitted.
    drop(x);
    gpu.trim_pool();
    let got = gpu.read(&y).expect("the recorded work runs after a trim");
    assert_eq!(first_wrong(&got, &data), None);
    assert_eq!(gpu.memory().pooled_bytes, 0, "trim_pool empties the pool");
    gpu.check().expect("no error is left over for later work");
}
