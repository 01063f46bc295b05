//! The tape: gradients of simple expressions, accumulation, frozen leaves, inference mode.

mod common;

use common::{assert_close, gpu};
use peft_wgpu::ops::elementwise::{add_var, mul_var, scale_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::{Tape, Tensor};

#[test]
fn gradient_accumulates_when_a_value_is_used_twice() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[2.0], &[1]).unwrap();
    let w = Tensor::from_slice(&gpu, &[3.0], &[1]).unwrap();
    let mut tape = Tape::new(&gpu);
    let (x, w) = (tape.param(&x), tape.constant(&w));
    // z = (x·w)·x + 2x  → dz/dx = 2xw + 2 = 14
    let xw = mul_var(&mut tape, &x, &w).unwrap();
    let xwx = mul_var(&mut tape, &xw, &x).unwrap();
    let two_x = scale_var(&mut tape, &x, 2.0).unwrap();
    let z = add_var(&mut tape, &xwx, &two_x).unwrap();
    let grads = tape.backward(&z).unwrap();
    assert_close("dz/dx", &gpu.read(grads.get(&x).unwrap()).unwrap(), &[14.0], 1e-7, 0.0);
    assert!(grads.get(&w).is_none(), "a frozen leaf got a gradient");
    assert_eq!(grads.len(), 1);
}

#[test]
fn a_tensor_made_a_parameter_twice_is_one_leaf_with_the_whole_gradient() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[2.0, -1.0], &[2]).unwrap();
    let mut tape = Tape::new(&gpu);
    // Two parameters of one tensor (an adapter bound twice, say): z = sum(3·x + x·x).
    let (first, second) = (tape.param(&x), tape.param(&x));
    assert_eq!(first.id(), second.id(), "the same buffer made a parameter twice");
    let three_x = scale_var(&mut tape, &first, 3.0).unwrap();
    let x_x = mul_var(&mut tape, &second, &second).unwrap();
    let both = add_var(&mut tape, &three_x, &x_x).unwrap();
    let z = sum_var(&mut tape, &both).unwrap();
    // A view under another shape is a leaf of its own.
    let view = tape.param(&x.reshape(&[1, 2]).unwrap());
    assert_ne!(view.id(), first.id());
    let grads = tape.backward(&z).unwrap();
    // dz/dx = 3 + 2x
    assert_close("dz/dx", &gpu.read(grads.get(&first).unwrap()).unwrap(), &[7.0, 1.0], 1e-7, 0.0);
    assert_eq!(grads.len(), 1, "one leaf received the gradient");
}

#[test]
fn inference_tape_records_nothing() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[2.0], &[1]).unwrap();
    let mut tape = Tape::inference(&gpu);
    let x = tape.param(&x);
    let y = scale_var(&mut tape, &x, 3.0).unwrap();
    assert!(!y.requires_grad());
    assert_eq!(gpu.read(y.value()).unwrap(), vec![6.0]);
    assert_eq!(tape.len(), 2, "two nodes, no backward rules");
    let e = tape.backward(&y).expect_err("nothing to run backward on");
    assert!(e.to_string().contains("Tape::inference"), "{e}");
}

#[test]
fn backward_needs_a_scalar() {
    let gpu = gpu();
    let mut tape = Tape::new(&gpu);
    let x = tape.param(&Tensor::zeros(&gpu, &[2]).unwrap());
    let y = scale_var(&mut tape, &x, 3.0).unwrap();
    assert!(tape.backward(&y).is_err());
}
