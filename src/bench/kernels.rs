//! The kernel workloads: `matmul_1024` and `spectral_filter_64x14x14x768`.

use super::{BenchOptions, Report, Size, ensure_close, rel_error, time};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::dct::GridPlan;
use crate::ops::matmul::{MatmulSpec, matmul};
use crate::ops::spectral::moppa_filter;
use crate::reference;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// `[n×n]·[n×n]`, n = 1024 (tiny: 67). The check compares 512 sampled elements (tiny: all)
/// with f64 dot products.
pub(crate) fn matmul_1024(gpu: &Gpu, options: &BenchOptions) -> Result<Report> {
    let name = "matmul_1024";
    let n = if options.size == Size::Full { 1024 } else { 67 };
    let mut rng = Rng::new(1024);
    let a_host = rng.normal_vec(n * n, 0.0, 1.0);
    let b_host = rng.normal_vec(n * n, 0.0, 1.0);
    let a = Tensor::from_slice(gpu, &a_host, &[n, n])?;
    let b = Tensor::from_slice(gpu, &b_host, &[n, n])?;
    let c = gpu.read(&matmul(gpu, &a, &b, MatmulSpec::new(), None, None)?)?;
    let samples: Vec<usize> =
        if n * n <= 512 * 16 { (0..n * n).collect() } else { (0..512).map(|_| rng.below(n * n)).collect() };
    let want: Vec<f64> = samples
        .iter()
        .map(|&e| {
            let (i, j) = (e / n, e % n);
            (0..n).map(|q| f64::from(a_host[i * n + q]) * f64::from(b_host[q * n + j])).sum()
        })
        .collect();
    let got: Vec<f32> = samples.iter().map(|&e| c[e]).collect();
    // Each element sums n products of N(0, 1) values: |c| ~ √n, error ~ √n·ε·|terms|.
    let error = rel_error(&got, &want, 1.0);
    ensure_close(name, "the product", error, 64.0 * f64::from(f32::EPSILON) * (n as f64).sqrt())?;
    let t = time(gpu, options.warmup, options.repeats(5), || {
        drop(matmul(gpu, &a, &b, MatmulSpec::new(), None, None)?);
        Ok(())
    })?;
    let (gflops, gpu_gflops) = t.rates(2.0 * (n as f64).powi(3) / 1e9);
    Ok(Report {
        gflops,
        gpu_gflops,
        check_error: error,
        checked: format!("{} of {} elements against f64 dot products", samples.len(), n * n),
        ..Report::timed(name, t)
    })
}

/// A response `r` `[gh, gw, c]` in the range the priors produce (mostly in (0, 1]).
fn response(rng: &mut Rng, g: usize, c: usize) -> Vec<f32> {
    rng.uniform_vec(g * g * c, 0.05, 1.0)
}

/// The MoPPA operator `IDCT2(DCT2(x) ⊙ r)` on `x` `[64, 14, 14, 768]` (tiny: `[3, 5, 5, 12]`).
/// The check runs the same kernel on the first two images (tiny: all) against the f64 twin.
pub(crate) fn spectral_filter(gpu: &Gpu, options: &BenchOptions) -> Result<Report> {
    let name = "spectral_filter_64x14x14x768";
    let (batch, g, c) = if options.size == Size::Full { (64, 14, 768) } else { (3, 5, 12) };
    let check_batch = batch.min(2);
    let mut rng = Rng::new(14);
    let plan = GridPlan::new(gpu, g, g)?;
    let r_host = response(&mut rng, g, c);
    let r = Tensor::from_slice(gpu, &r_host, &[g, g, c])?;
    let x_host = rng.normal_vec(batch * g * g * c, 0.0, 1.0);
    let x = Tensor::from_slice(gpu, &x_host, &[batch, g, g, c])?;
    let small_host = &x_host[..check_batch * g * g * c];
    let small = Tensor::from_slice(gpu, small_host, &[check_batch, g, g, c])?;
    let got = gpu.read(&moppa_filter(gpu, &plan, &small, &r)?)?;
    let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let want = reference::spectral::moppa_filter(&f64s(small_host), [check_batch, g * g, c], g, g, &f64s(&r_host));
    let error = rel_error(&got, &want, 1e-3);
    ensure_close(name, "the filtered tokens", error, 64.0 * f64::from(f32::EPSILON) * (2.0 * g as f64).sqrt())?;
    let t = time(gpu, options.warmup, options.repeats(7), || {
        drop(moppa_filter(gpu, &plan, &x, &r)?);
        Ok(())
    })?;
    let bytes = (x.len() * 4) as f64;
    let (gbps, gpu_gbps) = t.rates(2.0 * bytes / 1e9);
    Ok(Report {
        gbps,
        gpu_gbps,
        check_error: error,
        checked: format!("[{check_batch}, {g}, {g}, {c}] against the f64 twin"),
        ..Report::timed(name, t)
    })
}
