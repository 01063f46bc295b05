//! LayerNorm's CPU kernels (`norm_rows.wgsl`, `NormKernel::Rows`) against the f64 twin,
//! forward and backward, on row counts around the 8 a workgroup covers and widths from 4 to
//! 768; the same shapes on the workgroup kernels; a variance that overflows f32; and what
//! `Auto` picks, rows wider than the rows kernel takes included.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::Tensor;
use peft_wgpu::ops::norm::{NormKernel, layer_norm, layer_norm_backward_with, layer_norm_with};
use peft_wgpu::reference::norm as reference;

const SHAPES: [(usize, usize); 6] = [(1, 4), (7, 8), (9, 48), (17, 12), (64, 768), (1088, 48)];

fn check(kernel: NormKernel) {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for (rows, d) in SHAPES {
        let x = rng.normal_vec(rows * d, 0.5, 2.0);
        let gamma = rng.normal_vec(d, 1.0, 0.3);
        let beta = rng.normal_vec(d, 0.0, 0.3);
        let dy = rng.normal_vec(rows * d, 0.0, 1.0);
        let up = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
        let (tx, tg, tb, tdy) = (up(&x, &[rows, d]), up(&gamma, &[d]), up(&beta, &[d]), up(&dy, &[rows, d]));
        let eps = 1e-6;
        let out = layer_norm_with(&gpu, &tx, &tg, &tb, eps, kernel).unwrap();
        let (want_y, want_mean, want_rstd) = reference::layer_norm(&f64s(&x), &f64s(&gamma), &f64s(&beta), eps as f64);
        let what = format!("{kernel:?} [{rows}, {d}]");
        let rel = tol(8.0, d);
        assert_close(&format!("y {what}"), &gpu.read(&out.y).unwrap(), &want_y, rel, 1e-6);
        assert_close(&format!("mean {what}"), &gpu.read(&out.mean).unwrap(), &want_mean, rel, 1e-6);
        assert_close(&format!("rstd {what}"), &gpu.read(&out.rstd).unwrap(), &want_rstd, rel, 1e-6);
        let dx = layer_norm_backward_with(&gpu, &tx, &tg, &out.mean, &out.rstd, &tdy, kernel).unwrap();
        let want_dx = reference::layer_norm_backward(&f64s(&x), &f64s(&gamma), &f64s(&dy), eps as f64);
        assert_close(&format!("∂x {what}"), &gpu.read(&dx).unwrap(), &want_dx, tol(16.0, d), 1e-6);
    }
}

#[test]
fn layer_norm_rows_kernels_match_reference() {
    check(NormKernel::Rows);
}

#[test]
fn layer_norm_workgroup_kernels_match_reference_on_the_same_shapes() {
    check(NormKernel::Workgroup);
}

/// A row whose variance overflows f32 (one value of 1e20) gives a non-finite output on both
/// kernels, as PyTorch's NaN, so that the checks on logits and losses see it; the row
/// beside it is normalised as usual.
#[test]
fn an_overflowing_variance_gives_a_non_finite_row() {
    let gpu = gpu();
    let d = 8;
    let mut x: Vec<f32> = (0..2 * d).map(|i| (i % d) as f32).collect();
    x[3] = 1e20;
    let up = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
    let (tx, tg, tb) = (up(&x, &[2, d]), up(&[1.0; 8], &[d]), up(&[0.5; 8], &[d]));
    for kernel in [NormKernel::Rows, NormKernel::Workgroup] {
        let y = gpu.read(&layer_norm_with(&gpu, &tx, &tg, &tb, 1e-6, kernel).unwrap().y).unwrap();
        assert!(y[..d].iter().any(|v| !v.is_finite()), "{kernel:?}: the overflowing row is finite: {:?}", &y[..d]);
        assert!(y[d..].iter().all(|v| v.is_finite()), "{kernel:?}: the ordinary row: {:?}", &y[d..]);
    }
}

#[test]
fn rows_kernel_needs_a_width_divisible_by_4() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[3, 6]).unwrap();
    let g = Tensor::zeros(&gpu, &[6]).unwrap();
    let err = layer_norm_with(&gpu, &x, &g, &g, 1e-5, NormKernel::Rows).unwrap_err();
    assert!(err.to_string().contains("multiple of 4"), "{err}");
}

#[test]
fn auto_runs_the_rows_kernel_for_cpu_kernels_only() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[3, 8]).unwrap();
    let g = Tensor::zeros(&gpu, &[8]).unwrap();
    gpu.set_profiling(true);
    drop(layer_norm(&gpu, &x, &g, &g, 1e-5).unwrap());
    gpu.set_profiling(false);
    let ran: Vec<&str> = gpu.take_profile().iter().map(|k| k.entry).filter(|e| e.starts_with("layer_norm")).collect();
    let want = if common::expect_cpu_kernels(&gpu) { "layer_norm_rows" } else { "layer_norm" };
    assert_eq!(ran, [want]);
}

/// lavapipe ends an invocation's loops after 65,535 iterations in all, and the rows kernel
/// runs three loops over `d/4`: a row wider than `ROWS_MAX_D` goes to the workgroup kernel
/// (it came back half normalised, its last values 0, from 87,392 on), and the rows kernel
/// refuses it when asked.
#[test]
fn rows_wider_than_the_rows_kernel_takes_are_normalised_whole() {
    use peft_wgpu::ops::norm::ROWS_MAX_D;
    let gpu = gpu();
    let (rows, d) = (2, 2 * ROWS_MAX_D);
    let mut rng = Rng::new(43);
    let x = rng.normal_vec(rows * d, 0.5, 2.0);
    let gamma = rng.normal_vec(d, 1.0, 0.3);
    let beta = rng.normal_vec(d, 0.0, 0.3);
    let up = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
    let (tx, tg, tb) = (up(&x, &[rows, d]), up(&gamma, &[d]), up(&beta, &[d]));
    let out = layer_norm(&gpu, &tx, &tg, &tb, 1e-6).unwrap();
    let (want_y, _, _) = reference::layer_norm(&f64s(&x), &f64s(&gamma), &f64s(&beta), 1e-6);
    assert_close(&format!("y [{rows}, {d}]"), &gpu.read(&out.y).unwrap(), &want_y, tol(8.0, d), 1e-6);
    let dy = up(&rng.normal_vec(rows * d, 0.0, 1.0), &[rows, d]);
    let dx = layer_norm_backward_with(&gpu, &tx, &tg, &out.mean, &out.rstd, &dy, NormKernel::Auto).unwrap();
    let want_dx = reference::layer_norm_backward(&f64s(&x), &f64s(&gamma), &f64s(&gpu.read(&dy).unwrap()), 1e-6);
    assert_close(&format!("∂x [{rows}, {d}]"), &gpu.read(&dx).unwrap(), &want_dx, tol(16.0, d), 1e-6);
    let err = layer_norm_with(&gpu, &tx, &tg, &tb, 1e-6, NormKernel::Rows).unwrap_err();
    assert!(err.to_string().contains(&format!("at most {ROWS_MAX_D}")), "{err}");
}
