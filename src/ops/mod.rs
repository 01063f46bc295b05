//! Host side of each shader file: shape checks, the forward dispatch on tensors, and the
//! op on tape [`Var`](crate::autograd::Var)s with its backward rule beside it.

pub mod dct;
pub mod elementwise;
pub mod priors;
pub mod spectral;
