//! Work past one grid dimension: the one-dimensional kernels fold their grid into two once a
//! tensor has more than `max_compute_workgroups_per_dimension · 256` elements, and the row
//! kernels once there are more rows than one dimension holds. Each kernel that computes its
//! index from the folded grid runs on such a size here, against its f64 twin, with every
//! output poisoned with NaN, so an element the fold skips or writes twice fails.

mod common;

use common::{Rng, assert_close, f64s, gpu};
use peft_wgpu::ops::norm::{NormKernel, layer_norm_with};
use peft_wgpu::ops::{activation, dropout, elementwise, loss, shape};
use peft_wgpu::reference;
use peft_wgpu::reference::optim::AdamW;
use peft_wgpu::{Gpu, Optimizer, OptimizerKind, Tensor};

/// Threads per workgroup of the one-dimensional kernels.
const WG: usize = peft_wgpu::gpu::WG_1D as usize;
/// Channels of the two-dimensional views (`[n / D, D]`).
const D: usize = 8;

/// An element count past one grid dimension of one-dimensional workgroups, a multiple of `D`.
fn folded_len(gpu: &Gpu) -> usize {
    (gpu.limits().max_compute_workgroups_per_dimension as usize * WG + 1000).next_multiple_of(D)
}

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, v, shape).unwrap()
}

#[test]
fn elementwise_activation_dropout_and_permute_fold_long_grids() {
    let gpu = gpu();
    let n = folded_len(&gpu);
    let mut rng = Rng::new(3);
    let (a, b) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
    let bias = rng.normal_vec(D, 0.0, 1.0);
    let (ta, tb) = (upload(&gpu, &a, &[n / D, D]), upload(&gpu, &b, &[n / D, D]));
    let (a64, b64) = (f64s(&a), f64s(&b));
    let read = |t: Tensor| gpu.read(&t).unwrap();
    let got = read(elementwise::axpby(&gpu, 0.5, &ta, -2.0, &tb).unwrap());
    assert_close("axpby", &got, &reference::elementwise::axpby(0.5, &a64, -2.0, &b64), 1e-6, 0.0);
    let got = read(elementwise::mul(&gpu, &ta, &tb).unwrap());
    assert_close("mul", &got, &reference::elementwise::mul(&a64, &b64), 1e-7, 0.0);
    let got = read(activation::gelu(&gpu, &ta).unwrap());
    assert_close("gelu", &got, &reference::activation::gelu(&a64), 1e-6, 1e-7);
    let got = read(activation::bias_gelu(&gpu, &ta, &upload(&gpu, &bias, &[D])).unwrap());
    assert_close("bias_gelu", &got, &reference::activation::bias_gelu(&a64, &f64s(&bias)), 1e-6, 1e-7);
    let got = read(activation::gelu_backward(&gpu, &ta, &tb).unwrap());
    assert_close("gelu_backward", &got, &reference::activation::gelu_backward(&a64, &b64), 1e-6, 1e-7);
    let got = read(dropout::dropout(&gpu, &ta, 0.25, 11, 0).unwrap());
    assert_close("dropout", &got, &reference::dropout::dropout(&a64, 0.25, 11, 0), 1e-7, 0.0);
    let got = read(shape::permute(&gpu, &ta, &[1, 0]).unwrap());
    let want = reference::shape::permute(&a64, &[n / D, D], &[1, 0]);
    let moved_wrong = got.iter().zip(&want).position(|(&g, &w)| f64::from(g) != w);
    assert_eq!(moved_wrong, None, "permute: the first element that is not moved exactly");
}

#[test]
fn optimizer_steps_fold_long_grids() {
    let gpu = gpu();
    let n = folded_len(&gpu);
    let mut rng = Rng::new(5);
    let (init, grad) = (rng.normal_vec(n, 0.0, 1.0), rng.normal_vec(n, 0.0, 1.0));
    for kind in [OptimizerKind::Sgd { weight_decay: Some(0.01) }, OptimizerKind::adamw()] {
        let param = upload(&gpu, &init, &[n]);
        let mut opt = Optimizer::new(&gpu, kind, 0.1, std::slice::from_ref(&param)).unwrap();
        let g = upload(&gpu, &grad, &[n]);
        opt.step(&[Some(&g)]).unwrap();
        opt.step(&[Some(&g)]).unwrap();
        let (mut want, g64) = (f64s(&init), f64s(&grad));
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        for t in 1..=2 {
            match kind {
                OptimizerKind::Sgd { weight_decay } => reference::optim::sgd_step(&mut want, &g64, 0.1, weight_decay),
                OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                    let h = AdamW { lr: 0.1, beta1, beta2, eps, weight_decay };
                    reference::optim::adamw_step(&h, t, &mut want, &mut m, &mut v, &g64);
                }
            }
        }
        let tol = 8.0 * common::EPS;
        assert_close(&format!("{kind:?}"), &gpu.read(&param).unwrap(), &want, tol, tol);
    }
}

#[test]
fn layer_norm_and_cross_entropy_fold_many_rows() {
    let gpu = gpu();
    let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let mut rng = Rng::new(7);
    // The rows kernel runs 8 rows per workgroup, the other one row per workgroup: past both.
    let (rows, d) = (limit * 8 + 3, 4);
    let x = rng.normal_vec(rows * d, 0.0, 1.0);
    let (gamma, beta) = (rng.normal_vec(d, 1.0, 0.1), rng.normal_vec(d, 0.0, 0.1));
    let (want, _, _) = reference::norm::layer_norm(&f64s(&x), &f64s(&gamma), &f64s(&beta), 1e-5);
    let (tx, tg, tb) = (upload(&gpu, &x, &[rows, d]), upload(&gpu, &gamma, &[d]), upload(&gpu, &beta, &[d]));
    for kernel in [NormKernel::Rows, NormKernel::Workgroup] {
        let out = layer_norm_with(&gpu, &tx, &tg, &tb, 1e-5, kernel).unwrap();
        assert_close(&format!("layer_norm {kernel:?}"), &gpu.read(&out.y).unwrap(), &want, 1e-5, 1e-6);
    }
    let rows = limit + 3;
    let logits = rng.normal_vec(rows * 3, 0.0, 1.0);
    let labels: Vec<u32> = (0..rows).map(|i| (i % 3) as u32).collect();
    let (per_row, _) = reference::loss::cross_entropy_rows(&f64s(&logits), &labels, 3);
    let tl = Tensor::from_u32(&gpu, &labels, &[rows]).unwrap();
    let (got, _) = loss::cross_entropy_rows(&gpu, &upload(&gpu, &logits, &[rows, 3]), &tl).unwrap();
    assert_close("cross_entropy_rows", &gpu.read(&got).unwrap(), &per_row, 1e-6, 1e-7);
}
