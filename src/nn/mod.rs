//! The Hugging Face ViT, built from the ops: config, module names, weights and forward.

pub mod attention;
pub mod config;
pub mod names;
pub mod pattern;
mod save;
mod shapes;
mod shards;
pub mod vit;
pub mod weights;

pub use config::VitConfig;
pub use names::{LayerPart, ModuleId, Naming, Targets};
pub use pattern::{Pattern, PatternUse};
pub use vit::{NoHooks, Vit, VitHooks, VitVars};
pub use weights::VitWeights;
