//! The two matmul kernels forced one at a time against the f64 twin: the CPU kernel
//! (`matmul_rows.wgsl`) on every transpose combination, odd row counts, column counts past
//! a tile, batches and shared operands, with the epilogue; the tiled kernel on the same
//! shapes (on a CPU adapter `Auto` picks the rows kernel, so the tiled one is kept tested
//! here); and the choice `Auto` makes.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::ops::matmul::{MatmulKernel, MatmulSpec, matmul_with};
use peft_wgpu::reference::matmul as reference;
use peft_wgpu::{Gpu, Tensor};

/// The stored shape of an operand whose op is `rows × cols`.
fn stored(batch: &[usize], rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if transposed { [cols, rows] } else { [rows, cols] });
    s
}

/// Runs one product on `kernel` and compares it with the twin.
#[expect(clippy::too_many_arguments, reason = "one test case: shapes, batches, epilogue, kernel")]
fn check(
    gpu: &Gpu,
    rng: &mut Rng,
    (m, n, k): (usize, usize, usize),
    (batch_a, batch_b): (&[usize], &[usize]),
    spec: MatmulSpec,
    with_bias: bool,
    with_addend: bool,
    kernel: MatmulKernel,
) {
    let a_shape = stored(batch_a, m, k, spec.trans_a);
    let b_shape = stored(batch_b, k, n, spec.trans_b);
    let a = rng.normal_vec(a_shape.iter().product(), 0.0, 1.0);
    let b = rng.normal_vec(b_shape.iter().product(), 0.0, 1.0);
    let batch: Vec<usize> = if batch_a.len() >= batch_b.len() { batch_a.to_vec() } else { batch_b.to_vec() };
    let out_len = batch.iter().product::<usize>() * m * n;
    let bias = with_bias.then(|| rng.normal_vec(n, 0.0, 1.0));
    let addend = with_addend.then(|| rng.normal_vec(out_len, 0.0, 1.0));
    let ta = Tensor::from_slice(gpu, &a, &a_shape).unwrap();
    let tb = Tensor::from_slice(gpu, &b, &b_shape).unwrap();
    let t_bias = bias.as_ref().map(|v| Tensor::from_slice(gpu, v, &[n]).unwrap());
    let mut out_shape = batch;
    out_shape.extend([m, n]);
    let t_add = addend.as_ref().map(|v| Tensor::from_slice(gpu, v, &out_shape).unwrap());
    let y = matmul_with(gpu, &ta, &tb, spec, t_bias.as_ref(), t_add.as_ref(), kernel).unwrap();
    assert_eq!(y.shape(), out_shape.as_slice());
    let want = reference::matmul(
        &f64s(&a),
        &a_shape,
        &f64s(&b),
        &b_shape,
        spec,
        bias.as_deref().map(f64s).as_deref(),
        addend.as_deref().map(f64s).as_deref(),
    );
    let what = format!(
        "{kernel:?} {m}×{k}·{k}×{n} {spec:?} batches {batch_a:?}/{batch_b:?} bias {with_bias} addend {with_addend}"
    );
    assert_close(&what, &gpu.read(&y).unwrap(), &want, tol(4.0, k), 1e-6);
}

const SPECS: [MatmulSpec; 4] = [
    MatmulSpec { trans_a: false, trans_b: false, alpha: 1.0 },
    MatmulSpec { trans_a: false, trans_b: true, alpha: -0.5 },
    MatmulSpec { trans_a: true, trans_b: false, alpha: 2.0 },
    MatmulSpec { trans_a: true, trans_b: true, alpha: 0.75 },
];

/// (m, n, k): a single tile, odd rows (the last block moves back), columns past one
/// workgroup's 128 and lanes past the last quad, k of one step and of several.
const SHAPES: [(usize, usize, usize); 6] =
    [(32, 128, 4), (33, 20, 8), (68, 132, 36), (100, 260, 12), (64, 24, 100), (36, 516, 4)];

fn sweep(kernel: MatmulKernel) {
    let gpu = gpu();
    let mut rng = Rng::new(77);
    for spec in SPECS {
        for &(m, n, k) in &SHAPES {
            if spec.trans_a && !m.is_multiple_of(4) {
                continue; // the rows kernel reads Aᵀ as vec4s across rows
            }
            check(&gpu, &mut rng, (m, n, k), (&[], &[]), spec, false, false, kernel);
        }
        check(&gpu, &mut rng, (36, 20, 8), (&[], &[]), spec, true, false, kernel);
        check(&gpu, &mut rng, (36, 20, 8), (&[], &[]), spec, true, true, kernel);
        check(&gpu, &mut rng, (44, 132, 12), (&[3], &[3]), spec, false, true, kernel);
        check(&gpu, &mut rng, (40, 36, 16), (&[2, 2], &[]), spec, true, false, kernel);
        check(&gpu, &mut rng, (40, 36, 16), (&[], &[3]), spec, false, false, kernel);
    }
}

#[test]
fn matmul_rows_kernel_matches_reference() {
    sweep(MatmulKernel::Rows);
}

#[test]
fn matmul_tiled_kernel_matches_reference_on_the_same_shapes() {
    sweep(MatmulKernel::Tiled);
}

#[test]
fn matmul_kernel_of_64_tiles_matches_reference_on_the_same_shapes() {
    sweep(MatmulKernel::Tiled64);
}

#[test]
fn matmul_rows_kernel_refuses_shapes_it_cannot_do() {
    let gpu = gpu();
    let t = |r, c| Tensor::zeros(&gpu, &[r, c]).unwrap();
    let rows = MatmulKernel::Rows;
    let nn = MatmulSpec::new();
    // Fewer than 32 rows, 16 columns or fewer, k or n not a multiple of 4, Aᵀ with m % 4 ≠ 0.
    for (a, b, spec) in [
        (t(31, 8), t(8, 32), nn),
        (t(32, 8), t(8, 16), nn),
        (t(32, 6), t(6, 32), nn),
        (t(32, 8), t(8, 34), nn),
        (t(8, 33), t(8, 32), nn.transpose_a()),
    ] {
        let err = matmul_with(&gpu, &a, &b, spec, None, None, rows).unwrap_err();
        assert!(err.to_string().contains("rows kernel"), "{err}");
    }
}

#[test]
fn auto_picks_the_rows_kernel_for_cpu_kernels_with_subgroups_only() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[64, 8]).unwrap();
    let b = Tensor::zeros(&gpu, &[8, 64]).unwrap();
    let narrow = Tensor::zeros(&gpu, &[8, 8]).unwrap();
    gpu.set_profiling(true);
    drop(matmul_with(&gpu, &a, &b, MatmulSpec::new(), None, None, MatmulKernel::Auto).unwrap());
    drop(matmul_with(&gpu, &a, &narrow, MatmulSpec::new(), None, None, MatmulKernel::Auto).unwrap());
    gpu.set_profiling(false);
    let mut ran: Vec<&str> = gpu.take_profile().iter().map(|k| k.entry).filter(|e| e.starts_with("matmul")).collect();
    ran.sort_unstable();
    let cpu = common::expect_cpu_kernels(&gpu);
    let wide = match (cpu, gpu.has_subgroups_of(8), gpu.has_subgroups_of(4)) {
        (true, true, _) => "matmul_rows8_nn",
        (true, false, true) => "matmul_rows_nn",
        // A CPU adapter without subgroups takes the big tiles; GPUs take the small ones for
        // a product of so few tiles.
        (true, false, false) => "matmul",
        (false, ..) => "matmul64",
    };
    // lavapipe, the adapter CI runs on, has subgroups of 4 (128-bit vectors), 8 (256) or 16
    // (512): there the rows kernel must be taken.
    if gpu.adapter_info().driver.contains("llvmpipe") {
        assert!(gpu.has_subgroups_of(4), "lavapipe offers subgroups of at least 4 lanes");
    }
    let mut want = vec![wide, "matmul_narrow"];
    want.sort_unstable();
    assert_eq!(ran, want, "kernels run by Auto on {:?} (CPU kernels: {cpu})", gpu.adapter_info().device_type);
}

/// Narrow products (≤ 16 columns, or ≤ 16 rows through the transposed output) split over k
/// into partial products and their sum, against the twin; shapes the split does not take
/// (bias, batches, short k) run unsplit and stay correct.
#[test]
fn narrow_products_split_over_k_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(78);
    for spec in SPECS {
        for &(m, n, k) in &[(300, 8, 1000), (8, 300, 1000), (1576, 8, 768), (37, 3, 129), (5, 40, 700)] {
            let before = gpu.dispatch_count();
            check(&gpu, &mut rng, (m, n, k), (&[], &[]), spec, false, false, MatmulKernel::SplitK);
            let dispatches = gpu.dispatch_count() - before;
            assert!(dispatches >= 2, "{m}×{k}·{k}×{n} {spec:?} was not split ({dispatches} dispatch)");
        }
        check(&gpu, &mut rng, (300, 8, 1000), (&[], &[]), spec, true, true, MatmulKernel::SplitK);
        check(&gpu, &mut rng, (40, 8, 600), (&[3], &[3]), spec, false, false, MatmulKernel::SplitK);
        check(&gpu, &mut rng, (300, 8, 100), (&[], &[]), spec, false, false, MatmulKernel::SplitK);
    }
}
