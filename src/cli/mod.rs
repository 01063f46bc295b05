//! The commands behind the `peft-wgpu` binary (SPEC §11), as library functions.
//!
//! Each command first checks everything it can on the host: flags and numbers, every path
//! (missing, a file where a folder is expected or the reverse, an output that cannot be
//! written), every file's format, the adapter against the model's architecture, and the data
//! against the model and the classifier's labels. Only then does it open the GPU, so a bad
//! input is reported by name, quickly, even on a machine without one. Outputs are written
//! atomically, and an existing adapter is never replaced without `--force`.

mod checks;
mod eval;
mod inputs;
mod merge;
mod train;

pub use eval::eval;
pub use merge::merge;
pub use train::{LORA_NAMING_ENV, TrainArgs, TrainOutcome, train};

use std::path::Path;

use crate::error::Result;
use crate::train::StepReport;

/// Whether `dir` already holds an adapter (PEFT's older `adapter_model.bin` included).
pub fn holds_adapter(dir: &Path) -> bool {
    crate::io::paths::holds_any(dir, &crate::io::paths::ADAPTER_FILES)
}

/// Whether `dir` already holds a model: its config, its weights (PyTorch's `.bin` included),
/// or the index of its shards.
pub fn holds_model(dir: &Path) -> bool {
    crate::io::paths::holds_any(dir, &crate::io::paths::MODEL_FILES)
}

/// What a caller of [`train`] hears about the run.
pub trait Progress {
    /// Training is about to start: PEFT's trainable-parameter line and the step count.
    fn started(&mut self, _summary: &str, _steps: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// A line for the user in the middle of a run (a note), on stderr.
    fn note(&mut self, line: &str) {
        note!("{line}");
    }
    /// Evaluation has done `images` of `total` images.
    fn evaluated(&mut self, _images: usize, _total: usize) {}
    /// Training ended after `steps` steps with `final_loss`, and the adapter is saved in `out`
    /// (before `--eval-data` is evaluated). An error ends the run, the adapter kept.
    fn saved(&mut self, _steps: usize, _final_loss: f32, _out: &Path) -> Result<()> {
        Ok(())
    }
}

/// What to tell the user about a model with `n` merged RLP prompt tokens: only this crate
/// inserts them.
pub fn prompts_note(n: usize) -> String {
    format!(
        "note: the model holds {n} merged RLP prompt token{} (`prompt_embeddings` in its weights), which \
         peft-wgpu inserts after CLS; transformers' ViTForImageClassification (and PEFT on it) ignores that \
         tensor and computes other outputs",
        if n == 1 { "" } else { "s" }
    )
}
