//! Naive f64 CPU twins of the kernels, written from the textbook formulas and named like the
//! kernels they check. Test oracles only: slow on purpose, never used by the library.

pub mod dct;
pub mod elementwise;
pub mod priors;
pub mod spectral;
