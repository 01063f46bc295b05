//! The embedded demo (`peft-wgpu demo`).

use crate::error::{Error, Result};

/// Settings of the demo.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {}

/// Runs the demo.
pub fn run(_options: &DemoOptions) -> Result<()> {
    Err(Error::invalid("demo", "the demo is not built yet"))
}
