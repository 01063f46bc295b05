//! Benchmark workloads of SPEC §13 (`peft-wgpu bench`).

use crate::error::{Error, Result};

/// Runs every workload and prints a table, or one JSON object per line with `json`.
pub fn run_cli(_json: bool) -> Result<()> {
    Err(Error::invalid("bench", "the benchmarks are not built yet"))
}
