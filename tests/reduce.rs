//! Column sums (two stages) and the mean against their f64 twins.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::Tensor;
use peft_wgpu::ops::reduce;
use peft_wgpu::reference::reduce as reference;

#[test]
fn column_sums_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    // 64 rows per chunk: one chunk, exactly one, one more, and many.
    for &rows in &[1, 2, 63, 64, 65, 197, 4099] {
        for &cols in &[1, 7, 255, 256, 257] {
            let a = rng.normal_vec(rows * cols, 0.0, 1.0);
            let t = Tensor::from_slice(&gpu, &a, &[rows, cols]).unwrap();
            let got = gpu.read(&reduce::column_sums(&gpu, &t).unwrap()).unwrap();
            let want = reference::column_sums(&f64s(&a), cols);
            assert_close(&format!("column_sums rows={rows} cols={cols}"), &got, &want, tol(2.0, rows), 1e-6);
        }
    }
}

#[test]
fn mean_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    for &n in &[1, 2, 255, 256, 257, 10_007] {
        let a = rng.normal_vec(n, 1.0, 1.0);
        let t = Tensor::from_slice(&gpu, &a, &[n]).unwrap();
        let got = gpu.read(&reduce::mean(&gpu, &t).unwrap()).unwrap();
        assert_close(&format!("mean n={n}"), &got, &[reference::mean(&f64s(&a))], tol(2.0, n), 0.0);
    }
}
