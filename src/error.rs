//! The one error type of the library.
//!
//! Every failure a caller can cause is a value of [`Error`], with the file, key or value at
//! fault in its fields, so the binary can print one short line and pick an exit code with
//! [`Error::kind`].

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by who can fix it (see [`ErrorKind`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter matched the request.
    #[error("no GPU adapter found{filter}; {hint}")]
    NoAdapter {
        /// The active filter, e.g. ` matching PEFT_WGPU_ADAPTER="nvidia"`, or empty.
        filter: String,
        /// What to install or change.
        hint: String,
    },
    /// The adapter exists but refused the device request.
    #[error("could not open GPU device on {adapter}: {message}")]
    Device {
        /// Adapter name.
        adapter: String,
        /// Message from wgpu.
        message: String,
    },
    /// The adapter cannot give a limit or feature the kernels need.
    #[error("GPU adapter {adapter} offers {limit} = {available}, the kernels need {needed}")]
    Limit {
        /// Adapter name.
        adapter: String,
        /// Name of the wgpu limit.
        limit: &'static str,
        /// What the kernels need.
        needed: u64,
        /// What the adapter offers.
        available: u64,
    },
    /// A kernel would need more workgroups along one axis of its grid than the device allows
    /// (the batch axis of products, attention and the MoPPA filter is one).
    #[error(
        "kernel {kernel} needs {workgroups} workgroups along one axis, more than the {max} of this device's \
         max_compute_workgroups_per_dimension"
    )]
    TooManyWorkgroups {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Workgroups it needs along the axis.
        workgroups: u32,
        /// The limit's value.
        max: u32,
    },
    /// A tensor would exceed what one binding or buffer may hold on this device.
    #[error("{what} needs {}, more than the {max} bytes {}", size_text(*bytes), limit_text(limit))]
    TooLarge {
        /// The tensor or operation.
        what: String,
        /// Requested size (`u64::MAX` when the size itself overflows).
        bytes: u64,
        /// Name of the wgpu limit (`max_…`), or of the bound the kernels set.
        limit: &'static str,
        /// The limit's value.
        max: u64,
    },
    /// A kernel's loops would run longer in one invocation than the adapter lets them
    /// ([`crate::Gpu::loop_limit`]: lavapipe stops them after 65,535 iterations, without a word).
    #[error(
        "{what} needs {iterations} loop iterations in one kernel invocation, more than the {max} this adapter runs \
         (a CPU adapter such as lavapipe stops longer loops without a word)"
    )]
    TooLong {
        /// The operation and its size.
        what: String,
        /// Iterations one invocation would run.
        iterations: u64,
        /// The adapter's limit.
        max: u64,
    },
    /// The GPU ran out of memory.
    #[error("GPU out of memory during {during}")]
    OutOfMemory {
        /// What was running.
        during: String,
    },
    /// The GPU device was lost (driver reset, hang, unplug).
    #[error("GPU device lost: {message}")]
    DeviceLost {
        /// Reason from the driver.
        message: String,
    },
    /// wgpu reported a validation or internal error: a bug in this crate or the driver.
    #[error("GPU error in {during}: {message}")]
    Gpu {
        /// What was running.
        during: String,
        /// Message from wgpu.
        message: String,
    },
    /// Operands of an operation have incompatible shapes.
    #[error("{op}: expected {expected}, got {got}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What the operation needs.
        expected: String,
        /// What it was given.
        got: String,
    },
    /// A value given by the caller is out of range or otherwise unusable.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The value, flag or field at fault.
        what: String,
        /// Why it is rejected.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are malformed.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An expected tensor is missing from a file.
    #[error("{}: missing tensor `{key}`", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
    },
    /// A tensor in a file has the wrong shape or dtype.
    #[error("{}: tensor `{key}` is {got}, expected {expected}", path.display())]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// What was expected.
        expected: String,
        /// What the file holds.
        got: String,
    },
    /// An adapter tensor's shape is not the one the model and the adapter config give it.
    #[error(
        "{}: tensor `{key}` is shape {got:?}, expected {expected:?} for this model and {}",
        path.display(),
        config_text(other_config.as_deref())
    )]
    AdapterShape {
        /// The adapter's weights file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The shape the model and config give it.
        expected: Box<[usize]>,
        /// The shape in the file.
        got: Box<[usize]>,
        /// The adapter config the shapes come from, when it is not the one saved beside the
        /// weights.
        other_config: Option<PathBuf>,
    },
    /// A configuration field is missing or wrong.
    #[error("{}: `{key}` {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Training produced a non-finite loss.
    #[error("loss became {value} at step {} of the run (counting from 1); {}", *step + 1, non_finite_hint(*step))]
    NonFiniteLoss {
        /// 0-based step.
        step: usize,
        /// The value (NaN or inf).
        value: f32,
    },
    /// A step after others that succeeded failed; `done` says what was done (e.g. where the
    /// adapter was saved) so the user does not repeat it.
    #[error("{done}, but then: {source}")]
    After {
        /// What succeeded before the failure.
        done: String,
        /// The failure.
        source: Box<Error>,
    },
    /// The last step's update diverged (no later loss shows it).
    #[error(
        "the update of step {} (the last, counting from 1) diverged: {what}; it was undone and nothing was \
         saved; lower the learning rate (or the weight decay)",
        *step + 1
    )]
    DivergedUpdate {
        /// 0-based step.
        step: usize,
        /// What is non-finite.
        what: String,
    },
}

fn non_finite_hint(step: usize) -> &'static str {
    if step == 0 {
        "check the data, the model and the adapter (no update has been made yet)"
    } else {
        "lower the learning rate (or the weight decay) or check the data"
    }
}

/// The adapter config of [`Error::AdapterShape`]: the one saved with the weights (then the
/// adapter was likely made for another model) or another one (which may not be theirs).
fn config_text(other_config: Option<&std::path::Path>) -> String {
    match other_config {
        None => "config (an adapter for another model?)".into(),
        Some(config) => {
            format!("the config {} (the config saved beside these weights may fit them)", config.display())
        }
    }
}

fn size_text(bytes: u64) -> String {
    if bytes == u64::MAX { "more than 2⁶⁴ bytes".into() } else { format!("{bytes} bytes") }
}

fn limit_text(limit: &str) -> String {
    if limit.starts_with("max_") { format!("of this device's {limit}") } else { format!("allowed by {limit}") }
}

/// Who can fix an [`Error`]; the binary maps each to its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad flag, value or combination of arguments.
    Usage,
    /// A bad file, tensor, config or data set.
    Input,
    /// The GPU, its driver or its limits.
    Device,
    /// Training diverged.
    Training,
}

impl Error {
    /// Classifies the error for exit codes and messages.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoAdapter { .. }
            | Error::Device { .. }
            | Error::Limit { .. }
            | Error::TooLarge { .. }
            | Error::TooLong { .. }
            | Error::TooManyWorkgroups { .. }
            | Error::OutOfMemory { .. }
            | Error::DeviceLost { .. }
            | Error::Gpu { .. } => ErrorKind::Device,
            Error::Shape { .. } | Error::Invalid { .. } => ErrorKind::Usage,
            Error::Io { .. }
            | Error::Format { .. }
            | Error::MissingTensor { .. }
            | Error::TensorMismatch { .. }
            | Error::AdapterShape { .. }
            | Error::Config { .. } => ErrorKind::Input,
            Error::NonFiniteLoss { .. } | Error::DivergedUpdate { .. } => ErrorKind::Training,
            Error::After { source, .. } => source.kind(),
        }
    }

    /// Shorthand for [`Error::Shape`].
    pub(crate) fn shape(op: &'static str, expected: impl Into<String>, got: impl Into<String>) -> Self {
        Error::Shape { op, expected: expected.into(), got: got.into() }
    }

    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { what: what.into(), message: message.into() }
    }
}

/// `items` as a list for a message, `["a", "b"]`, with at most the first eight shown and a
/// count of the rest: a config may hold thousands.
pub(crate) fn list_excerpt(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = items.iter().take(SHOWN).map(|i| format!("{i:?}")).collect();
    match items.len().checked_sub(SHOWN) {
        Some(rest) if rest > 0 => format!("[{}, … {rest} more]", shown.join(", ")),
        _ => format!("[{}]", shown.join(", ")),
    }
}
