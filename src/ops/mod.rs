//! Host side of each shader file: shape checks, the forward dispatch on tensors, and the
//! op on tape [`Var`](crate::autograd::Var)s with its backward rule beside it.

pub mod activation;
pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod reduce;
pub mod softmax;
