//! Reading and writing files: safetensors (validated before any GPU work), JSON configs,
//! the data set format, path checks, and atomic writes that never leave a half-written file.

pub mod atomic;
pub mod data;
pub mod json;
pub(crate) mod memory;
pub mod paths;
pub mod safetensors;
pub mod stamp;

pub use data::Dataset;
pub use safetensors::{HostTensor, TensorFile};
