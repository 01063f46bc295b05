//! Dropout: the GPU mask equals its twin bit for bit (from any offset, so a slice gets the
//! whole tensor's mask), keeps about 1 − p, and the backward applies the same mask; p = 1
//! drops everything, p outside [0, 1] is refused.

mod common;

use common::{Rng, assert_close, f64s, gpu};
use peft_wgpu::ops::dropout::{dropout, dropout_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::dropout as reference;
use peft_wgpu::{Tape, Tensor};

#[test]
fn dropout_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    // The last offset makes the element indices wrap past 2³².
    let cases =
        [(1usize, 0.5, 1u64, 0usize), (257, 0.1, 2, 3), (70_001, 0.3, u64::MAX - 7, 0), (300, 0.4, 5, 0xFFFF_FF00)];
    for (n, p, seed, offset) in cases {
        let x = rng.normal_vec(n, 0.0, 1.0);
        let t = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
        let got = gpu.read(&dropout(&gpu, &t, p, seed, offset).unwrap()).unwrap();
        // The mask bit for bit: exactly zero where the twin drops, a kept value scaled by the
        // f32 `1/(1 − p)` (one rounding) elsewhere.
        let scale = (1.0 / (1.0 - p)) as f32;
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let want = if reference::keep(offset.wrapping_add(i), p, seed) { v * scale } else { 0.0 };
            assert!(g.to_bits() == want.to_bits(), "dropout n={n} p={p}: element {i} is {g}, expected {want}");
        }
        let twin = reference::dropout(&f64s(&x), p, seed, offset);
        assert_close(&format!("dropout n={n}"), &got, &twin, 1e-7, 0.0);
    }
}

/// Pieces of a tensor, each dropped with its offset in the tensor, give the whole tensor's
/// dropout: what a batch computed in pieces relies on.
#[test]
fn pieces_with_their_offsets_draw_the_whole_mask() {
    let gpu = gpu();
    let x = Rng::new(6).normal_vec(1000, 0.0, 1.0);
    let whole = gpu.read(&dropout(&gpu, &Tensor::from_slice(&gpu, &x, &[1000]).unwrap(), 0.3, 77, 0).unwrap()).unwrap();
    let mut pieces = Vec::new();
    for start in [0, 300, 600, 900] {
        let len = 300.min(1000 - start);
        let piece = Tensor::from_slice(&gpu, &x[start..start + len], &[len]).unwrap();
        pieces.extend(gpu.read(&dropout(&gpu, &piece, 0.3, 77, start).unwrap()).unwrap());
    }
    assert_eq!(pieces, whole);
    let shifted = gpu.read(&dropout(&gpu, &Tensor::from_slice(&gpu, &x[..300], &[300]).unwrap(), 0.3, 77, 1).unwrap());
    assert_ne!(shifted.unwrap(), whole[..300], "another offset draws another mask");
}

#[test]
fn dropout_keeps_about_one_minus_p() {
    let n = 100_000;
    for &p in &[0.05, 0.1, 0.5] {
        let kept = (0..n).filter(|&i| reference::keep(i, p, 42)).count() as f64 / n as f64;
        // Binomial standard deviation is below 0.0016 here; allow 5 of them.
        assert!((kept - (1.0 - p)).abs() < 0.008, "p={p}: kept {kept}");
    }
}

#[test]
fn dropout_backward_uses_the_same_mask() {
    let gpu = gpu();
    let n = 1000;
    let x = Tensor::full(&gpu, &[n], 1.0).unwrap();
    let mut tape = Tape::new(&gpu);
    let xv = tape.param(&x);
    let y = dropout_var(&mut tape, &xv, 0.25, 9, 5).unwrap();
    let forward = gpu.read(y.value()).unwrap();
    let s = sum_var(&mut tape, &y).unwrap();
    let grads = tape.backward(&s).unwrap();
    let g = gpu.read(grads.get(&xv).unwrap()).unwrap();
    assert_eq!(g, forward, "∂x of Σ dropout(x) at x = 1 is the scaled mask itself");
    assert!(forward.contains(&0.0) && forward.iter().any(|&v| v != 0.0));
}

#[test]
fn dropout_of_one_drops_everything_and_probabilities_outside_0_1_are_refused() {
    let gpu = gpu();
    let x = Tensor::full(&gpu, &[33], 2.5).unwrap();
    let mut tape = Tape::new(&gpu);
    let xv = tape.param(&x);
    let y = dropout_var(&mut tape, &xv, 1.0, 3, 0).unwrap();
    assert_eq!(gpu.read(y.value()).unwrap(), vec![0.0; 33], "torch.nn.Dropout(1.0) gives zeros");
    assert!((0..33).all(|i| !reference::keep(i, 1.0, 3)), "the twin keeps nothing either");
    let s = sum_var(&mut tape, &y).unwrap();
    let grads = tape.backward(&s).unwrap();
    assert_eq!(gpu.read(grads.get(&xv).unwrap()).unwrap(), vec![0.0; 33]);
    for p in [-0.1, 1.0 + 1e-9, f64::NAN] {
        let e = dropout(&gpu, &x, p, 1, 0).expect_err("a probability outside [0, 1]");
        assert!(e.to_string().contains("dropout probability"), "{p}: {e}");
    }
}
