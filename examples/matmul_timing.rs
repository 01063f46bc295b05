//! Ad-hoc throughput of the matmul kernels: `cargo run --release --example matmul_timing`.
//!
//! Checks one product against a CPU dot product first, then prints the median GFLOP/s of
//! 1024³ and of the LoRA shapes of a ViT-B layer (batch 8 × 197 tokens, width 768, rank 8).

#![expect(clippy::print_stdout, reason = "a timing tool prints its measurements")]

use std::time::Instant;

use peft_wgpu::ops::matmul::{MatmulSpec, matmul};
use peft_wgpu::rng::Rng;
use peft_wgpu::{Gpu, Tensor};

fn time(gpu: &Gpu, name: &str, (m, n, k): (usize, usize, usize), spec: MatmulSpec, reps: usize) -> anyhow::Result<()> {
    let mut rng = Rng::new(1);
    let a_shape = if spec.trans_a { [k, m] } else { [m, k] };
    let b_shape = if spec.trans_b { [n, k] } else { [k, n] };
    let a_host = rng.normal_vec(m * k, 0.0, 1.0);
    let b_host = rng.normal_vec(k * n, 0.0, 1.0);
    let a = Tensor::from_slice(gpu, &a_host, &a_shape)?;
    let b = Tensor::from_slice(gpu, &b_host, &b_shape)?;
    // Check one element first, so a fast wrong kernel cannot report a number.
    let c = gpu.read(&matmul(gpu, &a, &b, spec, None, None)?)?;
    let (i, j) = (m / 2, n / 3);
    let at = |x: &[f32], rows_first: bool, r: usize, q: usize, lead: usize| {
        if rows_first { x[r * lead + q] as f64 } else { x[q * lead + r] as f64 }
    };
    let want: f64 = (0..k)
        .map(|q| {
            at(&a_host, !spec.trans_a, i, q, if spec.trans_a { m } else { k })
                * at(&b_host, spec.trans_b, j, q, if spec.trans_b { k } else { n })
        })
        .sum();
    anyhow::ensure!((c[i * n + j] as f64 - want).abs() < 1e-3 * (k as f64).sqrt(), "{name}: wrong result");
    let mut times = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let c = matmul(gpu, &a, &b, spec, None, None)?;
        gpu.sync()?;
        times.push(start.elapsed().as_secs_f64());
        drop(c);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gflops = 2.0 * (m * n * k) as f64 / median / 1e9;
    println!("{name:<34} {m:>5}×{n:>5}×{k:>5}  {:>8.2} ms  {gflops:>7.2} GFLOP/s", median * 1e3);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new()?;
    println!("{:?}", gpu);
    let nt = MatmulSpec::new().transpose_b();
    let tn = MatmulSpec::new().transpose_a();
    time(&gpu, "square", (1024, 1024, 1024), MatmulSpec::new(), 5)?;
    time(&gpu, "square nt", (1024, 1024, 1024), nt, 5)?;
    time(&gpu, "square again", (1024, 1024, 1024), MatmulSpec::new(), 5)?;
    time(&gpu, "square tn", (1024, 1024, 1024), tn, 5)?;
    time(&gpu, "1000 nn", (1000, 1000, 1000), MatmulSpec::new(), 5)?;
    time(&gpu, "lora down x·Aᵀ", (1576, 8, 768), nt, 20)?;
    time(&gpu, "lora up h·Bᵀ", (1576, 768, 8), nt, 20)?;
    time(&gpu, "∂A = ∂hᵀ·x", (8, 768, 1576), tn, 20)?;
    time(&gpu, "∂B = ∂yᵀ·h", (768, 8, 1576), tn, 20)?;
    time(&gpu, "base x·Wᵀ", (1576, 768, 768), nt, 3)?;
    Ok(())
}
