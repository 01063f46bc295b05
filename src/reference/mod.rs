//! Naive f64 CPU twins of the kernels, written from the textbook formulas and named like the
//! kernels they check. Test oracles only: slow on purpose, never used by the library.

pub mod elementwise;
pub mod matmul;
pub mod shape;
pub mod sum;
