//! Elementwise kernels against their f64 twins, on awkward sizes.

mod common;

use common::{Rng, assert_close, f64s, gpu};
use peft_wgpu::Tensor;
use peft_wgpu::ops::elementwise;
use peft_wgpu::reference::elementwise as reference;

const SIZES: &[usize] = &[1, 2, 7, 255, 256, 257, 1000, 70_001];

#[test]
fn elementwise_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for &n in SIZES {
        let a = rng.normal_vec(n, 0.0, 1.0);
        let b = rng.normal_vec(n, 0.0, 1.0);
        let (ta, tb) = (Tensor::from_slice(&gpu, &a, &[n]).unwrap(), Tensor::from_slice(&gpu, &b, &[n]).unwrap());
        let (a64, b64) = (f64s(&a), f64s(&b));
        let got = gpu.read(&elementwise::add(&gpu, &ta, &tb).unwrap()).unwrap();
        assert_close(&format!("add n={n}"), &got, &reference::add(&a64, &b64), 1e-7, 0.0);
        let got = gpu.read(&elementwise::mul(&gpu, &ta, &tb).unwrap()).unwrap();
        assert_close(&format!("mul n={n}"), &got, &reference::mul(&a64, &b64), 1e-7, 0.0);
        let got = gpu.read(&elementwise::axpby(&gpu, 0.5, &ta, -2.0, &tb).unwrap()).unwrap();
        assert_close(&format!("axpby n={n}"), &got, &reference::axpby(0.5, &a64, -2.0, &b64), 1e-6, 0.0);
        let got = gpu.read(&elementwise::scale(&gpu, &ta, 3.0).unwrap()).unwrap();
        assert_close(&format!("scale n={n}"), &got, &reference::scale(&a64, 3.0), 1e-7, 0.0);
    }
}

#[test]
fn fill_and_zeros_write_every_element() {
    let gpu = gpu();
    for &n in SIZES {
        let t = Tensor::full(&gpu, &[n], 2.5).unwrap();
        assert!(gpu.read(&t).unwrap().iter().all(|&v| v == 2.5), "full n={n}");
        let z = Tensor::zeros(&gpu, &[n]).unwrap();
        assert!(gpu.read(&z).unwrap().iter().all(|&v| v == 0.0), "zeros n={n}");
    }
}

#[test]
fn mismatched_shapes_are_errors() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[3]).unwrap();
    let b = Tensor::zeros(&gpu, &[4]).unwrap();
    let e = elementwise::add(&gpu, &a, &b).unwrap_err();
    assert!(e.to_string().contains("add"), "{e}");
}

#[test]
fn pool_reuses_buffers_and_counts_bytes() {
    let gpu = gpu();
    let before = gpu.memory();
    let t = Tensor::zeros(&gpu, &[1000]).unwrap();
    let live = gpu.memory().live_bytes;
    assert!(live >= before.live_bytes + 4000, "live bytes {live} did not grow by the tensor");
    drop(t);
    assert_eq!(gpu.memory().live_bytes, before.live_bytes);
    let pooled = gpu.memory().pooled_bytes;
    let _again = Tensor::zeros(&gpu, &[1000]).unwrap();
    assert!(gpu.memory().pooled_bytes < pooled, "the pooled buffer was not reused");
}

#[test]
fn deep_copy_is_independent() {
    let gpu = gpu();
    let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let b = a.deep_copy(&gpu).unwrap();
    assert!(!a.same_buffer(&b));
    assert_eq!(gpu.read(&b).unwrap(), vec![1.0, 2.0, 3.0]);
}
