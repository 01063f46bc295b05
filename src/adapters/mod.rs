//! The adapters: LoRA (exactly PEFT's), FLoRA, MoPPA and RLP, their config and files.

pub mod config;

pub use config::{AdapterConfig, AdapterKind, FloraConfig, FloraRank, LoraConfig, MoppaConfig, PeftType, RlpConfig};
