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

/// The value of environment variable `var`: `None` when unset, an error naming it when it
/// is not UTF-8 (rather than taking such a value for unset).
pub(crate) fn env_var(var: &str) -> crate::Result<Option<String>> {
    env_text(var).map_err(|v| crate::Error::invalid(var, format!("is `{v}`, which is not UTF-8")))
}

/// [`env_var`] for callers that cache the outcome and word their own error: a value that is
/// not UTF-8 comes back as `Err` with its lossy spelling.
pub(crate) fn env_text(var: &str) -> Result<Option<String>, String> {
    match std::env::var(var) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(v.to_string_lossy().into_owned()),
    }
}

/// Writes one line on stderr (progress, notes). A stderr that cannot take it (a pipe whose
/// reader left, a full disk) loses the line and the work goes on, where `eprintln!` would
/// panic and end a training run over a log line.
pub fn stderr_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
