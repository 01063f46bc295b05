//! Host side of each shader file: shape checks, the forward dispatch on tensors, and the
//! op on tape [`Var`](crate::autograd::Var)s with its backward rule beside it.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dct;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod patch;
pub mod priors;
pub mod shape;
pub mod softmax;
pub mod spectral;
pub mod spectral_tile;
pub mod sum;
