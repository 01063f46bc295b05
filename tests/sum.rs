//! Sums over leading axes and over all elements against their f64 twins, with gradients.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::ops::sum::{self, mean_square_var, mean_var, sum_to_trailing_var, sum_var};
use peft_wgpu::reference::sum as reference;
use peft_wgpu::{Tape, Tensor};

#[test]
fn sum_rows_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(71);
    // 64 rows per chunk: one chunk, exactly one, one more, many, and a second reduction pass.
    for &rows in &[1, 2, 63, 64, 65, 197, 1576, 4099] {
        for &cols in &[1, 7, 255, 256, 257] {
            let a = rng.normal_vec(rows * cols, 0.0, 1.0);
            let t = Tensor::from_slice(&gpu, &a, &[rows, cols]).unwrap();
            let got = gpu.read(&sum::sum_rows(&gpu, &t, cols).unwrap()).unwrap();
            let want = reference::sum_rows(&f64s(&a), cols);
            assert_close(&format!("sum_rows rows={rows} cols={cols}"), &got, &want, tol(2.0, rows), 1e-6);
        }
    }
    let t = Tensor::zeros(&gpu, &[3, 5]).unwrap();
    assert!(sum::sum_rows(&gpu, &t, 4).is_err());
    assert!(sum::sum_to_trailing(&gpu, &t, 3).is_err());
}

#[test]
fn sum_all_and_mean_all_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(72);
    // One block (2048), one more, several passes of the tree (2048² + 1 needs three).
    for &n in &[1, 2, 255, 256, 257, 2047, 2048, 2049, 100_003, 2048 * 2048 + 1] {
        let a = rng.normal_vec(n, 0.5, 1.0);
        let t = Tensor::from_slice(&gpu, &a, &[n]).unwrap();
        let want = reference::sum_all(&f64s(&a));
        // A tree adds n terms with error about log2(n)·ε·Σ|a|; a serial loop would be n·ε.
        let bound =
            |c: f64| c * (n as f64).log2().max(1.0) * common::EPS * a.iter().map(|v| v.abs() as f64).sum::<f64>();
        let got = gpu.read(&sum::sum_all(&gpu, &t).unwrap()).unwrap();
        assert_close(&format!("sum_all n={n}"), &got, &[want], 0.0, bound(2.0));
        let got = gpu.read(&sum::mean_all(&gpu, &t).unwrap()).unwrap();
        assert_close(&format!("mean_all n={n}"), &got, &[want / n as f64], 0.0, bound(2.0) / n as f64);
    }
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    assert_eq!(gpu.read(&sum::sum_all(&gpu, &empty).unwrap()).unwrap(), vec![0.0]);
    assert!(sum::mean_all(&gpu, &empty).is_err());
}

#[test]
fn sums_broadcast_their_gradients_back() {
    let gpu = gpu();
    let mut rng = Rng::new(73);
    let shape = [3, 5, 7];
    let x = rng.normal_vec(105, 0.0, 1.0);
    let w = rng.normal_vec(35, 0.0, 1.0);
    let mut tape = Tape::new(&gpu);
    let vx = tape.param(&Tensor::from_slice(&gpu, &x, &shape).unwrap());
    let vw = tape.constant(&Tensor::from_slice(&gpu, &w, &[5, 7]).unwrap());
    // L = ⟨Σ_0 x, w⟩ + mean(x) + Σ x + mean(x²): ∂x = w[t] + 1/n + 1 + 2x/n.
    let s = sum_to_trailing_var(&mut tape, &vx, 2).unwrap();
    assert_eq!(s.shape(), &[5, 7]);
    let sw = peft_wgpu::ops::elementwise::mul_var(&mut tape, &s, &vw).unwrap();
    let parts = [sum_var(&mut tape, &sw).unwrap(), mean_var(&mut tape, &vx).unwrap(), sum_var(&mut tape, &vx).unwrap()];
    let ms = mean_square_var(&mut tape, &vx).unwrap();
    let mut loss = ms;
    for p in &parts {
        loss = peft_wgpu::ops::elementwise::add_var(&mut tape, &loss, p).unwrap();
    }
    let got = gpu.read(tape.backward(&loss).unwrap().get(&vx).unwrap()).unwrap();
    let n = 105.0;
    let want: Vec<f64> = (0..105).map(|i| w[i % 35] as f64 + 1.0 / n + 1.0 + 2.0 * x[i] as f64 / n).collect();
    assert_close("∂x", &got, &want, 1e-6, 1e-7);
}

#[test]
fn sums_over_empty_tensors_are_empty_or_zero_forward_and_backward() {
    let gpu = gpu();
    let nothing = Tensor::zeros(&gpu, &[3, 0]).unwrap();
    assert_eq!(sum::sum_to_trailing(&gpu, &nothing, 1).unwrap().shape(), [0]);
    let no_rows = Tensor::zeros(&gpu, &[0, 2]).unwrap();
    assert_eq!(gpu.read(&sum::sum_to_trailing(&gpu, &no_rows, 1).unwrap()).unwrap(), [0.0, 0.0]);
    // An empty leaf expanded over a new axis: its gradient is empty too.
    let mut tape = Tape::new(&gpu);
    let x = tape.param(&Tensor::zeros(&gpu, &[0]).unwrap());
    let y = peft_wgpu::ops::shape::expand_var(&mut tape, &x, &[3, 0]).unwrap();
    let s = sum_var(&mut tape, &y).unwrap();
    let grads = tape.backward(&s).unwrap();
    assert_eq!(grads.get(&x).map(|g| g.shape().to_vec()), Some(vec![0]));
}
