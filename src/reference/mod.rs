//! Naive f64 CPU twins of the kernels, written from the textbook formulas and named like the
//! kernels they check. Test oracles only: slow on purpose, never used by the library, hidden
//! from the API docs, and written for well-formed inputs (lengths that agree with the sizes
//! given), which they do not check.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dct;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod priors;
pub mod shape;
pub mod softmax;
pub mod spectral;
pub mod sum;
