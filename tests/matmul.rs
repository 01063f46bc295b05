//! Batched matmul against its f64 twin: odd sizes on both kernels, every transpose
//! combination, shared operands, the fused epilogue; gradients by finite differences on
//! the twin and by the adjoint identity.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::matmul::{MatmulSpec, matmul, matmul_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::matmul as reference;
use peft_wgpu::{Gpu, Tape, Tensor};

const SPECS: [MatmulSpec; 4] = [
    MatmulSpec { trans_a: false, trans_b: false, alpha: 1.0 },
    MatmulSpec { trans_a: true, trans_b: false, alpha: 1.0 },
    MatmulSpec { trans_a: false, trans_b: true, alpha: -0.5 },
    MatmulSpec { trans_a: true, trans_b: true, alpha: 2.0 },
];

/// The stored shape of an operand whose op is `rows × cols`.
fn stored(batch: &[usize], rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if transposed { [cols, rows] } else { [rows, cols] });
    s
}

struct Case {
    a: Vec<f32>,
    a_shape: Vec<usize>,
    b: Vec<f32>,
    b_shape: Vec<usize>,
}

fn case(rng: &mut Rng, (ba, bb): (&[usize], &[usize]), (m, n, k): (usize, usize, usize), spec: MatmulSpec) -> Case {
    let a_shape = stored(ba, m, k, spec.trans_a);
    let b_shape = stored(bb, k, n, spec.trans_b);
    let a = rng.normal_vec(a_shape.iter().product(), 0.0, 1.0);
    let b = rng.normal_vec(b_shape.iter().product(), 0.0, 1.0);
    Case { a, a_shape, b, b_shape }
}

fn check_forward(gpu: &Gpu, c: &Case, spec: MatmulSpec, bias: Option<&[f32]>, addend: Option<&[f32]>, what: &str) {
    let ta = Tensor::from_slice(gpu, &c.a, &c.a_shape).unwrap();
    let tb = Tensor::from_slice(gpu, &c.b, &c.b_shape).unwrap();
    let n = if spec.trans_b { c.b_shape[c.b_shape.len() - 2] } else { c.b_shape[c.b_shape.len() - 1] };
    let k = if spec.trans_b { c.b_shape[c.b_shape.len() - 1] } else { c.b_shape[c.b_shape.len() - 2] };
    let t_bias = bias.map(|v| Tensor::from_slice(gpu, v, &[n]).unwrap());
    let want = reference::matmul(
        &f64s(&c.a),
        &c.a_shape,
        &f64s(&c.b),
        &c.b_shape,
        spec,
        bias.map(f64s).as_deref(),
        addend.map(f64s).as_deref(),
    );
    let out_shape = {
        let y = matmul(gpu, &ta, &tb, spec, None, None).unwrap();
        y.shape().to_vec()
    };
    let t_add = addend.map(|v| Tensor::from_slice(gpu, v, &out_shape).unwrap());
    let y = matmul(gpu, &ta, &tb, spec, t_bias.as_ref(), t_add.as_ref()).unwrap();
    assert_eq!(y.len(), want.len(), "{what}: output shape {:?}", y.shape());
    assert_close(what, &gpu.read(&y).unwrap(), &want, tol(4.0, k), 1e-6);
}

/// Products whose inner dimension runs past 65,535 (lavapipe ends a shader invocation's loops
/// there) sum every term: all-ones operands give `k` exactly, on the narrow, tiled and rows
/// kernels and every transpose; random ones with bias, addend and alpha match the twin.
#[test]
fn long_inner_dimensions_sum_every_term() {
    let gpu = gpu();
    let k = 70_001;
    for (m, n) in [(1, 16), (16, 1), (40, 16), (64, 64)] {
        for spec in SPECS {
            let a = Tensor::full(&gpu, &stored(&[], m, k, spec.trans_a), 1.0).unwrap();
            let b = Tensor::full(&gpu, &stored(&[], k, n, spec.trans_b), 1.0).unwrap();
            let y = gpu.read(&matmul(&gpu, &a, &b, spec, None, None).unwrap()).unwrap();
            let want = spec.alpha * k as f32;
            assert!(
                y.iter().all(|&v| v == want),
                "{m}×{k}·{k}×{n} {spec:?}: {:?}…, expected {want}",
                &y[..4.min(y.len())]
            );
        }
    }
    let mut rng = Rng::new(70);
    for spec in SPECS {
        let c = case(&mut rng, (&[2], &[]), (3, 5, 40_000), spec);
        let bias = rng.normal_vec(5, 0.0, 1.0);
        let addend = rng.normal_vec(2 * 3 * 5, 0.0, 1.0);
        check_forward(&gpu, &c, spec, Some(&bias), Some(&addend), &format!("2×3×40000·40000×5 {spec:?}"));
    }
}

#[test]
fn matmul_matches_reference_on_odd_sizes() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let sizes = [1, 2, 3, 7, 13, 63, 64, 65, 127, 200];
    // Every size in every position, with the others varied; rows 129 and 257 cross the
    // tiles of the general (128) and narrow (256) kernels.
    let mut shapes = Vec::new();
    for (i, &s) in sizes.iter().enumerate() {
        shapes.push((s, sizes[(i + 3) % 10], sizes[(i + 7) % 10]));
        shapes.push((sizes[(i + 5) % 10], s, sizes[(i + 2) % 10]));
        shapes.push((sizes[(i + 1) % 10], sizes[(i + 8) % 10], s));
    }
    shapes.extend([(129, 8, 33), (257, 5, 17), (300, 16, 9), (8, 300, 20), (129, 129, 129), (17, 17, 3)]);
    for (idx, &(m, n, k)) in shapes.iter().enumerate() {
        let spec = SPECS[idx % 4];
        let c = case(&mut rng, (&[], &[]), (m, n, k), spec);
        check_forward(&gpu, &c, spec, None, None, &format!("m={m} n={n} k={k} {spec:?}"));
    }
}

#[test]
fn every_transpose_combination_on_each_kernel() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    // General, narrow (few columns) and transposed-narrow (few rows) paths.
    for &(m, n, k) in &[(65, 70, 33), (130, 7, 40), (5, 131, 19), (3, 2, 1)] {
        for spec in SPECS {
            let c = case(&mut rng, (&[], &[]), (m, n, k), spec);
            check_forward(&gpu, &c, spec, None, None, &format!("m={m} n={n} k={k} {spec:?}"));
        }
    }
}

#[test]
fn batches_and_shared_operands() {
    let gpu = gpu();
    let mut rng = Rng::new(33);
    let batches: [(&[usize], &[usize]); 6] =
        [(&[3], &[3]), (&[2, 3], &[2, 3]), (&[4], &[]), (&[], &[4]), (&[1, 5], &[]), (&[2, 2], &[1])];
    for (bi, &batch) in batches.iter().enumerate() {
        for &(m, n, k) in &[(13, 65, 7), (70, 5, 9), (4, 40, 21)] {
            for spec in SPECS {
                let c = case(&mut rng, batch, (m, n, k), spec);
                check_forward(&gpu, &c, spec, None, None, &format!("batch {bi} m={m} n={n} k={k} {spec:?}"));
            }
        }
    }
}

#[test]
fn fused_bias_and_addend() {
    let gpu = gpu();
    let mut rng = Rng::new(34);
    for &(m, n, k) in &[(65, 130, 17), (200, 8, 64), (3, 100, 8)] {
        for (si, spec) in SPECS.into_iter().enumerate() {
            // Separate batches, and a shared B (the batch folds into the rows when !trans_a).
            for batch in [(&[][..], &[][..]), (&[2][..], &[2][..]), (&[3][..], &[][..])] {
                let c = case(&mut rng, batch, (m, n, k), spec);
                let bias = rng.normal_vec(n, 0.0, 1.0);
                let addend = rng.normal_vec(batch.0.iter().product::<usize>() * m * n, 0.0, 1.0);
                let what = format!("m={m} n={n} k={k} spec {si} batch {batch:?}");
                check_forward(&gpu, &c, spec, Some(&bias), None, &format!("{what} bias"));
                check_forward(&gpu, &c, spec, None, Some(&addend), &format!("{what} addend"));
                check_forward(&gpu, &c, spec, Some(&bias), Some(&addend), &format!("{what} both"));
            }
        }
    }
}

#[test]
fn bad_shapes_and_scales_are_errors() {
    let gpu = gpu();
    let t = |s: &[usize]| Tensor::zeros(&gpu, s).unwrap();
    let nn = MatmulSpec::new();
    assert!(matmul(&gpu, &t(&[2, 3]), &t(&[4, 5]), nn, None, None).is_err(), "inner dims");
    assert!(matmul(&gpu, &t(&[2, 2, 3]), &t(&[3, 3, 5]), nn, None, None).is_err(), "batch 2 vs 3");
    assert!(matmul(&gpu, &t(&[3]), &t(&[3, 5]), nn, None, None).is_err(), "rank 1");
    assert!(matmul(&gpu, &t(&[2, 3]), &t(&[3, 5]), nn, Some(&t(&[4])), None).is_err(), "bias");
    assert!(matmul(&gpu, &t(&[2, 3]), &t(&[3, 5]), nn, None, Some(&t(&[5, 2]))).is_err(), "addend");
    for alpha in [f32::NAN, f32::INFINITY] {
        let e = matmul(&gpu, &t(&[2, 3]), &t(&[3, 5]), nn.scaled(alpha), None, None).unwrap_err();
        assert!(e.to_string().contains("alpha"), "alpha {alpha}: {e}");
    }
    let ok = matmul(&gpu, &t(&[2, 3]), &t(&[3, 5]), nn, Some(&t(&[5])), Some(&t(&[2, 5]))).unwrap();
    assert_eq!(ok.shape(), &[2, 5]);
}

/// `L = ⟨C, W⟩` for the twin, as a function of the flat operands.
fn twin_loss(c: &Case, a: &[f64], b: &[f64], spec: MatmulSpec, bias: &[f64], addend: &[f64], w: &[f64]) -> f64 {
    let y = reference::matmul(a, &c.a_shape, b, &c.b_shape, spec, Some(bias), Some(addend));
    y.iter().zip(w).map(|(y, w)| y * w).sum()
}

/// Central differences of `f` at `x`, one coordinate at a time.
fn finite_diff(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-4;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + h;
            let up = f(&x);
            x[i] = keep - h;
            let down = f(&x);
            x[i] = keep;
            (up - down) / (2.0 * h)
        })
        .collect()
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let gpu = gpu();
    let mut rng = Rng::new(35);
    let batches: [(&[usize], &[usize]); 3] = [(&[], &[]), (&[3], &[]), (&[], &[2])];
    for &batch in &batches {
        for &(m, n, k) in &[(5, 7, 3), (9, 2, 6), (2, 19, 4)] {
            for spec in SPECS {
                let c = case(&mut rng, batch, (m, n, k), spec);
                let z = c.a.len() / (m * k) * c.b.len() / (n * k);
                let bias = rng.normal_vec(n, 0.0, 1.0);
                let addend = rng.normal_vec(z * m * n, 0.0, 1.0);
                let w = rng.normal_vec(z * m * n, 0.0, 1.0);
                let mut tape = Tape::new(&gpu);
                let va = tape.param(&Tensor::from_slice(&gpu, &c.a, &c.a_shape).unwrap());
                let vb = tape.param(&Tensor::from_slice(&gpu, &c.b, &c.b_shape).unwrap());
                let vbias = tape.param(&Tensor::from_slice(&gpu, &bias, &[n]).unwrap());
                let y = matmul(&gpu, va.value(), vb.value(), spec, None, None).unwrap();
                let vadd = tape.param(&Tensor::from_slice(&gpu, &addend, y.shape()).unwrap());
                let vw = tape.constant(&Tensor::from_slice(&gpu, &w, y.shape()).unwrap());
                let y = matmul_var(&mut tape, &va, &vb, spec, Some(&vbias), Some(&vadd)).unwrap();
                let yw = mul_var(&mut tape, &y, &vw).unwrap();
                let loss = sum_var(&mut tape, &yw).unwrap();
                let grads = tape.backward(&loss).unwrap();
                let read = |v| gpu.read(grads.get(v).expect("a gradient")).unwrap();
                let (a, b, bi, ad, w) = (f64s(&c.a), f64s(&c.b), f64s(&bias), f64s(&addend), f64s(&w));
                let what = format!("batch {batch:?} m={m} n={n} k={k} {spec:?}");
                let fd_a = finite_diff(&a, |a| twin_loss(&c, a, &b, spec, &bi, &ad, &w));
                let fd_b = finite_diff(&b, |b| twin_loss(&c, &a, b, spec, &bi, &ad, &w));
                let fd_bias = finite_diff(&bi, |bi| twin_loss(&c, &a, &b, spec, bi, &ad, &w));
                let fd_add = finite_diff(&ad, |ad| twin_loss(&c, &a, &b, spec, &bi, ad, &w));
                assert_close(&format!("∂A {what}"), &read(&va), &fd_a, tol(8.0, n * z), 1e-6);
                assert_close(&format!("∂B {what}"), &read(&vb), &fd_b, tol(8.0, m * z), 1e-6);
                assert_close(&format!("∂bias {what}"), &read(&vbias), &fd_bias, tol(8.0, m * z), 1e-6);
                assert_close(&format!("∂addend {what}"), &read(&vadd), &fd_add, 1e-6, 1e-6);
            }
        }
    }
}

#[test]
fn frozen_operand_gets_no_gradient() {
    let gpu = gpu();
    let mut rng = Rng::new(36);
    let a = Tensor::from_slice(&gpu, &rng.normal_vec(12, 0.0, 1.0), &[3, 4]).unwrap();
    let b = Tensor::from_slice(&gpu, &rng.normal_vec(20, 0.0, 1.0), &[4, 5]).unwrap();
    let mut tape = Tape::new(&gpu);
    let (va, vb) = (tape.constant(&a), tape.param(&b));
    let y = matmul_var(&mut tape, &va, &vb, MatmulSpec::new(), None, None).unwrap();
    let loss = sum_var(&mut tape, &y).unwrap();
    let grads = tape.backward(&loss).unwrap();
    assert!(grads.get(&va).is_none());
    // ∂B[q, j] = Σ_i A[i, q] for L = Σ C.
    let a64 = f64s(&gpu.read(&a).unwrap());
    let want: Vec<f64> = (0..20).map(|e| (0..3).map(|i| a64[i * 4 + e / 5]).sum()).collect();
    assert_close("∂B", &gpu.read(grads.get(&vb).unwrap()).unwrap(), &want, 1e-6, 1e-6);
}

#[test]
fn adjoint_identity_on_the_gpu() {
    // ⟨A·X, Y⟩ = ⟨X, Aᵀ·Y⟩ with both products on the GPU, on the general and narrow kernels.
    let gpu = gpu();
    let mut rng = Rng::new(37);
    for &(m, k, n) in &[(150, 97, 3), (64, 65, 140), (7, 300, 1)] {
        let a = rng.normal_vec(m * k, 0.0, 1.0);
        let x = rng.normal_vec(k * n, 0.0, 1.0);
        let y = rng.normal_vec(m * n, 0.0, 1.0);
        let ta = Tensor::from_slice(&gpu, &a, &[m, k]).unwrap();
        let ax = matmul(&gpu, &ta, &Tensor::from_slice(&gpu, &x, &[k, n]).unwrap(), MatmulSpec::new(), None, None);
        let aty = matmul(
            &gpu,
            &ta,
            &Tensor::from_slice(&gpu, &y, &[m, n]).unwrap(),
            MatmulSpec::new().transpose_a(),
            None,
            None,
        );
        let dot = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
        let left = dot(&gpu.read(&ax.unwrap()).unwrap(), &y);
        let right = dot(&x, &gpu.read(&aty.unwrap()).unwrap());
        // Each product element carries an error of about ε·√depth·Σ|terms|, so the two sides
        // may differ by that much summed against the other factor: Σ |A||X||Y| over all terms.
        let magnitude: f64 = (0..m)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| (0..k).map(|l| f64::from((a[i * k + l] * x[l * n + j] * y[i * n + j]).abs())).sum::<f64>())
            .sum();
        let bound = 8.0 * common::EPS * ((m.max(k)) as f64).sqrt() * magnitude;
        assert!((left - right).abs() <= bound, "m={m} k={k} n={n}: {left} vs {right} (bound {bound:.3e})");
    }
}
