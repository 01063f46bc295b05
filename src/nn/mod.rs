//! The Hugging Face ViT, built from the ops: config, module names, weights and forward.

pub mod config;
pub mod names;
pub mod weights;

pub use config::VitConfig;
pub use names::{LayerPart, ModuleId, Naming, Targets};
pub use weights::VitWeights;
