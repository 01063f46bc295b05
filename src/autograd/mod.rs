//! Reverse-mode automatic differentiation on the GPU.
//!
//! A [`Tape`] is an arena of nodes addressed by typed [`NodeId`]s. Every op in
//! [`crate::ops`] takes [`Var`]s, runs its forward kernels at once and, when one of its inputs
//! needs a gradient, records a backward rule that holds exactly the tensors it needs.
//! A [`Var`] owns its value, so an intermediate nobody saved is freed as soon as the caller
//! drops it, as in PyTorch. [`Tape::backward`] consumes the tape, runs the rules in reverse
//! order and returns the gradients of the trainable leaves.

mod tape;

pub use tape::{Gradients, NodeId, Tape, Var};
