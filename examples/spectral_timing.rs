//! Ad hoc timing of the MoPPA spectral filter on `[64, 14, 14, 768]` (SPEC §13's
//! `spectral_filter_64x14x14x768`): fused and unfused forward and backward. Checks that the
//! two paths agree before timing. Run with `cargo run --release --example spectral_timing`.

use std::time::Instant;

use peft_wgpu::ops::dct::GridPlan;
use peft_wgpu::ops::spectral::{self, FilterPath};
use peft_wgpu::rng::Rng;
use peft_wgpu::{Gpu, Tensor};

fn median_ms<T>(gpu: &Gpu, runs: usize, mut f: impl FnMut() -> peft_wgpu::Result<T>) -> anyhow::Result<f64> {
    f()?;
    gpu.sync()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        gpu.sync()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}

#[expect(clippy::print_stdout, reason = "an example that reports timings")]
fn main() -> anyhow::Result<()> {
    let (batch, gh, gw, ch) = (64, 14, 14, 768);
    let runs: usize = std::env::args().nth(1).map_or(Ok(5), |s| s.parse())?;
    let gpu = Gpu::new()?;
    let mut rng = Rng::new(1);
    let shape = [batch, gh, gw, ch];
    let n = batch * gh * gw * ch;
    let x = Tensor::from_slice(&gpu, &rng.normal_vec(n, 0.0, 1.0), &shape)?;
    let dy = Tensor::from_slice(&gpu, &rng.normal_vec(n, 0.0, 1.0), &shape)?;
    let r = Tensor::from_slice(&gpu, &rng.uniform_vec(gh * gw * ch, 0.0, 1.0), &[gh, gw, ch])?;
    let plan = GridPlan::new(&gpu, gh, gw)?;

    let fused = gpu.read(&spectral::moppa_filter_with(&gpu, &plan, &x, &r, FilterPath::Fused)?)?;
    let unfused = gpu.read(&spectral::moppa_filter_with(&gpu, &plan, &x, &r, FilterPath::Unfused)?)?;
    let scale = unfused.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = fused.iter().zip(&unfused).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    anyhow::ensure!(worst <= 1e-5 * scale, "fused and unfused differ by {worst} (max |y| {scale})");

    let info = gpu.adapter_info();
    println!("adapter: {} ({:?}), tiles {:?}", info.name, info.backend, spectral::fused_tiles(&gpu, gh, gw, ch));
    let bytes = (2 * n * 4) as f64;
    for (name, path) in [("fused forward", FilterPath::Fused), ("unfused forward", FilterPath::Unfused)] {
        let ms = median_ms(&gpu, runs, || spectral::moppa_filter_with(&gpu, &plan, &x, &r, path))?;
        println!("{name:>16} {shape:?}: {ms:8.2} ms  {:6.2} GB/s (2·bytes/time)", bytes / ms / 1e6);
    }
    for (name, path) in [("fused backward", FilterPath::Fused), ("unfused backward", FilterPath::Unfused)] {
        let ms = median_ms(&gpu, runs, || spectral::moppa_filter_grads(&gpu, &plan, &x, Some(&r), &dy, path))?;
        println!("{name:>16} {shape:?}: {ms:8.2} ms  (∂x and ∂r)");
    }
    Ok(())
}
