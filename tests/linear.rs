//! Linear layers: forward against the twin, gradients against the textbook rules, and what
//! the backward rule keeps alive when the weight is frozen.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::ops::elementwise::{mul_var, scale_var};
use peft_wgpu::ops::linear::{linear, linear_var};
use peft_wgpu::ops::matmul::MatmulSpec;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::{matmul as reference, sum as sum_ref};
use peft_wgpu::{Tape, Tensor};

#[test]
fn linear_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for &(lead, inn, out) in &[(&[5][..], 7, 3), (&[2, 3][..], 64, 130), (&[2, 197][..], 33, 8), (&[1][..], 1, 1)] {
        let rows: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(inn);
        let x = rng.normal_vec(rows * inn, 0.0, 1.0);
        let w = rng.normal_vec(out * inn, 0.0, 1.0);
        let b = rng.normal_vec(out, 0.0, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tw = Tensor::from_slice(&gpu, &w, &[out, inn]).unwrap();
        let tb = Tensor::from_slice(&gpu, &b, &[out]).unwrap();
        for bias in [None, Some(&tb)] {
            let y = linear(&gpu, &tx, &tw, bias).unwrap();
            let mut want_shape = lead.to_vec();
            want_shape.push(out);
            assert_eq!(y.shape(), want_shape.as_slice());
            let want = reference::linear(&f64s(&x), &f64s(&w), out, bias.map(|_| f64s(&b)).as_deref());
            let what = format!("linear {lead:?} in={inn} out={out} bias={}", bias.is_some());
            assert_close(&what, &gpu.read(&y).unwrap(), &want, tol(4.0, inn), 1e-6);
        }
    }
    let bad = linear(&gpu, &Tensor::zeros(&gpu, &[2, 3]).unwrap(), &Tensor::zeros(&gpu, &[4, 5]).unwrap(), None);
    assert!(bad.is_err());
}

/// Gradients of `L = ⟨y, g⟩` for `y = x Wᵀ + b`, so `∂y = g`.
#[test]
fn linear_gradients_follow_the_textbook_rules() {
    let gpu = gpu();
    let mut rng = Rng::new(42);
    let (n, t, inn, out) = (2, 9, 20, 6);
    let rows = n * t;
    let x = rng.normal_vec(rows * inn, 0.0, 1.0);
    let w = rng.normal_vec(out * inn, 0.0, 1.0);
    let b = rng.normal_vec(out, 0.0, 1.0);
    let g = rng.normal_vec(rows * out, 0.0, 1.0);
    for train_w in [false, true] {
        let mut tape = Tape::new(&gpu);
        let vx = tape.param(&Tensor::from_slice(&gpu, &x, &[n, t, inn]).unwrap());
        let tw = Tensor::from_slice(&gpu, &w, &[out, inn]).unwrap();
        let vw = if train_w { tape.param(&tw) } else { tape.constant(&tw) };
        let vb = tape.param(&Tensor::from_slice(&gpu, &b, &[out]).unwrap());
        let vg = tape.constant(&Tensor::from_slice(&gpu, &g, &[n, t, out]).unwrap());
        let y = linear_var(&mut tape, &vx, &vw, Some(&vb)).unwrap();
        let yg = mul_var(&mut tape, &y, &vg).unwrap();
        let loss = sum_var(&mut tape, &yg).unwrap();
        let grads = tape.backward(&loss).unwrap();
        let (x64, w64, g64) = (f64s(&x), f64s(&w), f64s(&g));
        // ∂x = g W, ∂W = gᵀ x, ∂b = Σ_rows g.
        let want_x = reference::matmul(&g64, &[rows, out], &w64, &[out, inn], MatmulSpec::new(), None, None);
        let spec_t = MatmulSpec::new().transpose_a();
        let want_w = reference::matmul(&g64, &[rows, out], &x64, &[rows, inn], spec_t, None, None);
        let gx = gpu.read(grads.get(&vx).expect("∂x")).unwrap();
        assert_close("∂x", &gx, &want_x, tol(4.0, out), 1e-6);
        let gb = gpu.read(grads.get(&vb).expect("∂b")).unwrap();
        assert_close("∂b", &gb, &sum_ref::sum_rows(&g64, out), tol(4.0, rows), 1e-6);
        match grads.get(&vw) {
            Some(gw) if train_w => assert_close("∂W", &gpu.read(gw).unwrap(), &want_w, tol(4.0, rows), 1e-6),
            None if !train_w => {}
            other => panic!("train_w={train_w} but ∂W is {other:?}"),
        }
        assert_eq!(grads.len(), if train_w { 3 } else { 2 });
    }
}

/// With a frozen weight the rule saves `W` for `∂x` but not the input; with a trained
/// weight it must save the input. Measured by whether the input's buffer outlives its `Var`.
#[test]
fn frozen_weight_does_not_keep_the_input_alive() {
    let gpu = gpu();
    let (rows, inn, out) = (64, 256, 8);
    let x = Tensor::full(&gpu, &[rows, inn], 0.5).unwrap();
    let w = Tensor::full(&gpu, &[out, inn], 0.25).unwrap();
    for train_w in [false, true] {
        let mut tape = Tape::new(&gpu);
        let vx = tape.param(&x);
        let vw = if train_w { tape.param(&w) } else { tape.constant(&w) };
        // `h` is an intermediate: only the tape (if anything) can keep its buffer.
        let h = scale_var(&mut tape, &vx, 2.0).unwrap();
        let y = linear_var(&mut tape, &h, &vw, None).unwrap();
        let live_with_h = gpu.memory().live_bytes;
        drop(h);
        let freed = live_with_h - gpu.memory().live_bytes;
        if train_w {
            assert_eq!(freed, 0, "a trained weight needs the input, so the tape must keep it");
        } else {
            assert!(freed >= (rows * inn * 4) as u64, "frozen weight: the input was kept alive ({freed} bytes freed)");
        }
        let loss = sum_var(&mut tape, &y).unwrap();
        let grads = tape.backward(&loss).unwrap();
        // L = Σ y with y = 2x Wᵀ: ∂x = 2 Σ_o W[o, :] = 2·out·0.25.
        let gx = gpu.read(grads.get(&vx).unwrap()).unwrap();
        assert!(gx.iter().all(|&v| v == 2.0 * out as f32 * 0.25), "∂x {:?}", &gx[..4]);
        assert_eq!(grads.get(&vw).is_some(), train_w);
    }
}

#[test]
fn input_without_gradient_gets_none() {
    let gpu = gpu();
    let mut tape = Tape::new(&gpu);
    let vx = tape.constant(&Tensor::full(&gpu, &[3, 4], 1.0).unwrap());
    let vw = tape.param(&Tensor::full(&gpu, &[2, 4], 1.0).unwrap());
    let y = linear_var(&mut tape, &vx, &vw, None).unwrap();
    let loss = sum_var(&mut tape, &y).unwrap();
    let grads = tape.backward(&loss).unwrap();
    assert!(grads.get(&vx).is_none());
    // ∂W[o, i] = Σ_r x[r, i] = 3.
    assert_eq!(gpu.read(grads.get(&vw).unwrap()).unwrap(), vec![3.0; 8]);
}
