//! # peft-wgpu
//!
//! Parameter-efficient fine-tuning on any GPU through [wgpu]: Vulkan, Metal, DX12, and
//! lavapipe on headless machines. WGSL compute shaders do the work; a small runtime
//! records them on an autograd [`Tape`] and trains only the adapter.
//!
//! ```no_run
//! use peft_wgpu::{Gpu, Tensor};
//! # fn main() -> peft_wgpu::Result<()> {
//! let gpu = Gpu::new()?;
//! let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
//! let y = peft_wgpu::ops::elementwise::scale(&gpu, &x, 2.0)?;
//! assert_eq!(gpu.read(&y)?, vec![2.0, 4.0, 6.0, 8.0]);
//! # Ok(()) }
//! ```
//!
//! ## Where things are
//!
//! - [`nn::Vit`]: a transformers `ViTForImageClassification` folder on the GPU, its forward
//!   pass on the tape with an adapter's hooks.
//! - [`adapters::Adapter`]: LoRA, FLoRA, MoPPA and RLP from a PEFT-style config
//!   ([`adapters::AdapterConfig`]) or adapter folder; saving and merging.
//! - [`train::train`] and [`train::evaluate`]: the training and evaluation loops over an
//!   [`io::Dataset`].
//! - [`Tape`], [`ops`] and [`Optimizer`]: the autograd tape, the ops recorded on it, SGD and
//!   AdamW.
//! - [`Gpu`]: the device, chosen by [`Gpu::new`] or adopted from an application that already
//!   renders with wgpu ([`Gpu::from_device`]).
//! - [`cli`]: the command line's commands as functions.
//!
//! The README's "Using the library" section trains a LoRA adapter from Rust, and the
//! repository's `examples/` embed the library in a program with its own wgpu device.

#![warn(clippy::unwrap_used)]

/// `eprintln!` that never panics: see [`io::stderr_line`].
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::io::stderr_line(format_args!($($arg)*))
    };
}

pub mod adapters;
pub mod autograd;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod error;
pub mod gpu;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
// Public only for the integration tests that use the twins as oracles; not part of the API
// (its functions assume well-formed inputs and do not check them).
#[doc(hidden)]
pub mod reference;
pub mod rng;
pub mod tensor;
pub mod train;

pub use autograd::{Gradients, NodeId, Tape, Var};
pub use error::{Error, ErrorKind, Result};
pub use gpu::{Gpu, GpuOptions, Kernel, MemoryStats, Shader};
pub use optim::{Optimizer, OptimizerCheckpoint, OptimizerKind};
pub use tensor::{DType, Tensor};

/// The README's example compiles as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
