//! Misuse of the library's API ends in an error naming what was wrong, never in a panic or a
//! silently wrong result: tensors of another device, `Var`s of another tape, shapes whose
//! size overflows, and an adapter merged into a model of another architecture.

mod common;

use common::gpu;
use peft_wgpu::ops::elementwise::{add, mul_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::{Optimizer, OptimizerKind, Tape, Tensor};

#[test]
fn tensors_of_another_gpu_are_refused_by_name() {
    let (g1, g2) = (gpu(), gpu());
    let a = Tensor::from_slice(&g1, &[1.0, 2.0], &[2]).unwrap();
    let b = Tensor::from_slice(&g2, &[3.0, 4.0], &[2]).unwrap();
    let g1_clone = g1.clone();
    assert!(a.is_on(&g1) && !a.is_on(&g2) && a.is_on(&g1_clone), "a clone of a Gpu is the same device");
    let another = |e: peft_wgpu::Error| assert!(e.to_string().contains("another Gpu"), "{e}");
    another(add(&g1, &a, &b).expect_err("b lives on g2"));
    another(g2.read(&a).expect_err("a lives on g1"));
    another(a.deep_copy(&g2).expect_err("a lives on g1"));
    another(
        Optimizer::new(&g2, OptimizerKind::Sgd { weight_decay: None }, 0.1, std::slice::from_ref(&a))
            .expect_err("params"),
    );
    let mut opt =
        Optimizer::new(&g1, OptimizerKind::Sgd { weight_decay: None }, 0.1, std::slice::from_ref(&a)).unwrap();
    let foreign_grad = Tensor::from_slice(&g2, &[1.0, 1.0], &[2]).unwrap();
    another(opt.step(&[Some(&foreign_grad)]).expect_err("a gradient of g2"));
    // Nothing was recorded for the refused calls: g1 still computes and reads correctly.
    assert_eq!(g1.read(&add(&g1, &a, &a).unwrap()).unwrap(), [2.0, 4.0]);
}

#[test]
fn vars_of_another_tape_are_refused_by_name() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let (mut t1, mut t2) = (Tape::new(&gpu), Tape::new(&gpu));
    let a1 = t1.param(&x);
    let a2 = t2.param(&x);
    let b2 = t2.param(&x);
    // The loss of one tape given to another.
    let loss1 = sum_var(&mut t1, &a1).unwrap();
    let e = t2.backward(&loss1).expect_err("a loss of another tape");
    assert!(e.to_string().contains("another tape"), "{e}");
    // A Var of another tape inside an op: the tape refuses to run backward.
    let mut t3 = Tape::new(&gpu);
    let a3 = t3.param(&x);
    let y = mul_var(&mut t3, &a3, &b2).unwrap();
    let loss3 = sum_var(&mut t3, &y).unwrap();
    let e = t3.backward(&loss3).expect_err("a Var of another tape was used");
    assert!(e.to_string().contains("another tape"), "{e}");
    // Gradients answer only for their own tape's Vars.
    let mut t4 = Tape::new(&gpu);
    let a4 = t4.param(&x);
    let loss4 = sum_var(&mut t4, &a4).unwrap();
    let grads = t4.backward(&loss4).unwrap();
    assert!(grads.get(&a4).is_some());
    assert!(grads.get(&a2).is_none(), "a Var of another tape with the same node id");
}
