//! The GPU runtime: adapter choice, the device, the buffer pool, the kernel registry and the
//! one dispatch helper every op goes through.
//!
//! Work is recorded into a pending command encoder and submitted every 16 commands on GPUs
//! (2048 on CPU adapters; `PEFT_WGPU_SUBMIT_EVERY` overrides), when results are read back
//! ([`Gpu::read`]) and when [`Gpu::sync`] is called; nothing waits on the device before a
//! read or a sync. Parameters reach kernels as immediates (push constants), so no uniform
//! buffers are allocated per dispatch.

mod device;
mod kernels;
mod pipelines;
mod pool;
mod readback;
mod recorder;
mod shaders;
mod timer;

pub use device::{GpuOptions, MemoryStats};
pub use kernels::Kernel;
pub(crate) use pool::PooledBuffer;
pub use readback::PendingRead;
pub use recorder::KernelTime;
pub use shaders::Shader;
pub use timer::GpuTimer;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Bytes of immediate data (push constants) the kernels may use; every params struct fits.
pub const MAX_PARAMS_BYTES: u32 = 64;

/// The loop iterations per invocation the ops plan for on an adapter with a
/// [`Gpu::loop_limit`]: half of it, so that a kernel's fixed loops and an estimate's rounding
/// stay inside.
pub const LOOP_BUDGET: usize = 32_768;

/// Threads per workgroup of the one-dimensional kernels (`WG` in the shaders).
pub const WG_1D: u32 = 256;

/// Largest tensor on any device, in bytes: kernels index elements and pass counts as `u32`,
/// so a tensor holds at most 2³² − 2¹⁷ elements of 4 bytes (the margin keeps the last index
/// of a one-dimensional grid folded into two dimensions below 2³², so that no invocation
/// past the end wraps onto the first elements). [`Gpu::max_tensor_bytes`] is this or the
/// device's own limit, whichever is smaller (only Metal's bindings reach it).
pub const MAX_TENSOR_BYTES: u64 = 4 * ((1 << 32) - (1 << 17));

/// The name [`crate::Error::TooLarge`] gives [`MAX_TENSOR_BYTES`].
pub const MAX_TENSOR_LIMIT: &str = "u32 element indexing in the kernels";

/// A handle to a GPU device with its queue, kernels and buffer pool. Cheap to clone; all
/// clones share one device.
///
/// Threads may share it: each op records its kernels into one pending encoder, and work
/// reaches the queue in the order it was recorded, so every thread's results are its own.
/// A device error (a wgpu validation error, out of memory) is reported by the next
/// [`Gpu::check`], [`Gpu::sync`] or read of whichever thread comes first, since the device
/// cannot tell whose work raised it.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    kernels: pipelines::Registry,
    pool: Arc<Mutex<pool::Pool>>,
    recorder: Mutex<recorder::Recorder>,
    /// Held while an encoder is taken and queued, so submissions keep the order of their
    /// recording; re-entrant, because wgpu runs ready callbacks (an application's too) inside
    /// `Queue::submit`, and one may submit work of its own.
    submit_turn: parking_lot::ReentrantMutex<()>,
    /// Errors the device raised, not yet reported by [`Gpu::check`].
    errors: Arc<Mutex<Vec<Error>>>,
    lost: Arc<Mutex<Option<String>>>,
    poison: std::sync::atomic::AtomicBool,
    profiling: std::sync::atomic::AtomicBool,
    /// How long a wait may pass without a submission finishing ([`Gpu::set_wait_limit`]).
    wait_limit: Mutex<Option<std::time::Duration>>,
    /// Submissions the device has finished, counted by their completion callbacks.
    finished: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a wait timed out and the queue was abandoned (never waited for on drop).
    abandoned: std::sync::atomic::AtomicBool,
    /// Whether the automatic kernel choices take the CPU adapters' kernels
    /// ([`Gpu::cpu_kernels`]).
    cpu_kernels: bool,
}

/// Runs `f`, which calls `device`, inside error scopes of every filter, and returns what it
/// returned with the errors it raised (validation first, then out-of-memory, then internal).
/// Scopes belong to the calling thread, so nothing an application does on another thread
/// is caught, and its own uncaptured-error handler never sees this crate's errors.
pub(crate) fn catch_errors<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> (T, Vec<wgpu::Error>) {
    let filters = [wgpu::ErrorFilter::Validation, wgpu::ErrorFilter::OutOfMemory, wgpu::ErrorFilter::Internal];
    let scopes = filters.map(|filter| device.push_error_scope(filter));
    let out = f();
    // Scopes pop in the reverse order of their pushes.
    let mut errors: Vec<wgpu::Error> =
        scopes.into_iter().rev().filter_map(|scope| pollster::block_on(scope.pop())).collect();
    errors.reverse();
    (out, errors)
}

/// The error of this crate for an error the device raised `during` some work, with wgpu's
/// multi-line report ("Validation Error", "Caused by:", the causes) on one line.
pub(crate) fn device_error(e: wgpu::Error, during: &str) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory { during: during.into() },
        e => {
            let text = e.to_string();
            let parts: Vec<&str> =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "Caused by:").collect();
            Error::Gpu { during: during.into(), message: parts.join(": ") }
        }
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it: every
/// structure behind these locks stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gpu {
    /// Runs `f`, which records a read-modify-write of tensors spread over several recorder
    /// calls (an optimizer step: copy in, update, copy out), with no other thread recording
    /// or submitting in between, so two steps over one tensor never lose one another's
    /// update. It holds the submit turn, which is re-entrant: a submission `f` makes, and a
    /// callback that wgpu runs inside it on this thread, take it again without waiting.
    pub(crate) fn updating<T>(&self, f: impl FnOnce() -> T) -> T {
        let _turn = self.inner.submit_turn.lock();
        f()
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Name, backend and driver of the adapter in use.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The limits the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.inner.device.features()
    }

    /// Whether the automatic kernel choices (matrix product, attention, layer norm, MoPPA
    /// filter) take the kernels written for CPU adapters, which run a workgroup as SIMD lanes,
    /// rather than those written for GPUs. By default: whether the adapter is a CPU
    /// (lavapipe). `PEFT_WGPU_KERNELS=cpu` or `gpu` overrides it, so that one machine can
    /// run both families end to end (the tests run the GPUs' kernels on lavapipe this way);
    /// either family computes the same results within rounding.
    pub fn cpu_kernels(&self) -> bool {
        self.inner.cpu_kernels
    }

    /// The loop iterations one invocation of a kernel may run in all, when the adapter stops
    /// them: lavapipe (Mesa's llvmpipe) ends an invocation's loops after 65,535 iterations,
    /// without a word, so a longer loop would compute part of its sum. `None` on GPUs. Ops
    /// whose loops grow with a shape split their work under it ([`LOOP_BUDGET`] of it, for
    /// margin) or refuse the shape.
    pub fn loop_limit(&self) -> Option<usize> {
        (self.inner.info.device_type == wgpu::DeviceType::Cpu).then_some(65_535)
    }

    /// Loop iterations of one invocation of a kernel whose workgroup of [`WG_1D`] threads
    /// takes a row of `len` values: `passes` strided passes over it and `reductions` tree
    /// reductions (log₂ 256 = 8 steps each).
    pub(crate) fn row_loops(passes: usize, len: usize, reductions: usize) -> usize {
        passes * len.div_ceil(WG_1D as usize) + 8 * reductions
    }

    /// Fails with [`Error::TooLong`] when one invocation's loops would run `iterations`
    /// (an upper bound) and the adapter stops loops before that ([`Gpu::loop_limit`]); `what`
    /// names the operation and its size.
    pub(crate) fn check_loops(&self, what: impl FnOnce() -> String, iterations: usize) -> Result<()> {
        match self.loop_limit() {
            Some(max) if iterations > max => {
                Err(Error::TooLong { what: what(), iterations: iterations as u64, max: max as u64 })
            }
            _ => Ok(()),
        }
    }

    /// Whether kernels may use subgroup operations across `lanes` invocations: the device
    /// was opened with [`wgpu::Features::SUBGROUP`] and every subgroup of the adapter has at
    /// least `lanes` invocations. The CPU kernels also rely on what every driver known does
    /// and the specs leave open: a small workgroup's invocations fill its subgroups in order,
    /// so invocations `0..lanes` are the first `lanes` of one subgroup.
    pub fn has_subgroups_of(&self, lanes: u32) -> bool {
        self.features().contains(wgpu::Features::SUBGROUP) && self.inner.info.subgroup_min_size >= lanes
    }

    /// Live, peak and pooled device bytes of tensors made through this handle.
    pub fn memory(&self) -> MemoryStats {
        lock(&self.inner.pool).stats()
    }

    /// Starts a new peak measurement at the current live byte count.
    pub fn reset_peak_memory(&self) {
        lock(&self.inner.pool).reset_peak();
    }

    /// Frees the pooled (unused) buffers.
    pub fn trim_pool(&self) {
        lock(&self.inner.pool).trim();
    }

    /// When on, every freshly allocated tensor is filled with NaN before use, so a kernel that
    /// leaves an element unwritten shows up in tests. Off by default.
    pub fn set_poison_new_buffers(&self, on: bool) {
        self.inner.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// When on, every dispatch is submitted and waited for on its own and its wall time is
    /// added to its kernel's total (see [`Gpu::take_profile`]). A diagnostic: it serialises
    /// the device and costs a round trip per dispatch. Off by default.
    pub fn set_profiling(&self, on: bool) {
        self.inner.profiling.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a wait for the device (a read, [`Gpu::sync`]) may pass without the device
    /// finishing any submission before the wait fails with [`Error::DeviceLost`], instead of
    /// hanging on a device that stopped answering; `None` waits without a limit. A long queue
    /// that keeps finishing its submissions is waited for however long it takes. Starts at
    /// `PEFT_WGPU_WAIT_SECONDS` (0: no limit), or when that is unset at 600 seconds on a GPU
    /// this crate opened, and no limit on a CPU adapter (where one submission carries up to
    /// 2048 commands, which for a large model can be minutes of honest work) or on a device
    /// adopted with [`Gpu::from_device`] (whose application's own submissions, which this
    /// crate does not see finish, may hold its queue). A zero limit is none. Work that timed
    /// out is not cancelled: a later wait may still see it finish. After a timeout the
    /// device's queue is abandoned: dropping the last handle no longer waits for it to go
    /// idle (which, on a device that stopped answering, would never end), and what it holds
    /// is freed when the process ends.
    pub fn set_wait_limit(&self, limit: Option<std::time::Duration>) {
        // A zero limit is none, as `PEFT_WGPU_WAIT_SECONDS=0` is.
        *lock(&self.inner.wait_limit) = limit.filter(|l| !l.is_zero());
    }

    /// The wait limit ([`Gpu::set_wait_limit`]).
    pub fn wait_limit(&self) -> Option<std::time::Duration> {
        *lock(&self.inner.wait_limit)
    }

    pub(crate) fn profiling(&self) -> bool {
        self.inner.profiling.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn poison_new_buffers(&self) -> bool {
        self.inner.poison.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn pool(&self) -> &Arc<Mutex<pool::Pool>> {
        &self.inner.pool
    }

    /// Builds the pipelines of `kernels` now instead of at their first dispatch, so that an
    /// application can pay the driver's shader compilation where it chooses (at start-up,
    /// behind a loading screen) rather than inside its first training step. Kernels built
    /// before cost nothing. Fails as a dispatch would, with the first kernel that cannot be
    /// built here (one that needs a feature the adapter lacks, say).
    pub fn prepare(&self, kernels: &[Kernel]) -> Result<()> {
        for &kernel in kernels {
            self.inner.kernels.pipeline(&self.inner.device, kernel)?;
        }
        Ok(())
    }

    /// Submits all recorded work and waits until the device has finished it, then reports
    /// any error the device raised meanwhile.
    pub fn sync(&self) -> Result<()> {
        let index = self.submit();
        self.wait(index.as_ref())
    }

    /// Fails with the first error the device reported since the last check, if any.
    pub fn check(&self) -> Result<()> {
        if let Some(message) = lock(&self.inner.lost).clone() {
            return Err(Error::DeviceLost { message });
        }
        match lock(&self.inner.errors).drain(..).next() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Runs `f`, which calls the device, and keeps the errors it raises for [`Gpu::check`].
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        let (out, errors) = catch_errors(&self.inner.device, f);
        if !errors.is_empty() {
            lock(&self.inner.errors).extend(errors.into_iter().map(|e| device_error(e, "GPU work")));
        }
        out
    }

    /// Polls the device until submission `index` (all work when `None`) has finished, as long
    /// as some submission finishes within each [`Gpu::wait_limit`]; `Timeout` when none did.
    pub(crate) fn poll_until(&self, index: Option<&wgpu::SubmissionIndex>) -> std::result::Result<(), wgpu::PollError> {
        let limit = self.wait_limit();
        // Callbacks of work that finished before this wait run first, so they count as no
        // progress made during it.
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
        loop {
            let before = self.inner.finished.load(std::sync::atomic::Ordering::Relaxed);
            let wait = wgpu::PollType::Wait { submission_index: index.cloned(), timeout: limit };
            match self.inner.device.poll(wait) {
                // The poll ran the callbacks of what finished meanwhile, so the count is
                // current: any progress earns another full wait.
                Err(wgpu::PollError::Timeout)
                    if self.inner.finished.load(std::sync::atomic::Ordering::Relaxed) != before => {}
                outcome => return outcome.map(drop),
            }
        }
    }

    /// The error of a wait that timed out. Dropping the queue waits for it to go idle, without
    /// a limit: a device that stopped answering would hang whoever drops the last handle (a
    /// command's exit). Its queue is abandoned instead, once, left to the process's end.
    pub(crate) fn timed_out(&self) -> Error {
        if !self.inner.abandoned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::mem::forget(self.inner.queue.clone());
        }
        let waited = self.wait_limit().map_or_else(String::new, |l| format!(" in {}", seconds_text(l)));
        Error::DeviceLost {
            message: format!(
                "the device finished none of its work{waited}: it stopped answering, or one submission \
                 needs longer (PEFT_WGPU_WAIT_SECONDS or Gpu::set_wait_limit raises the limit; 0 removes it)"
            ),
        }
    }

    /// Whether a wait timed out on this device (its queue was abandoned).
    pub(crate) fn abandoned(&self) -> bool {
        self.inner.abandoned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the device has finished submission `index` (all work when `None`), then
    /// reports any error it raised.
    pub(crate) fn wait(&self, index: Option<&wgpu::SubmissionIndex>) -> Result<()> {
        match self.poll_until(index) {
            Ok(()) => self.check(),
            Err(wgpu::PollError::Timeout) => Err(self.timed_out()),
            // The submission was refused: the error that refused it says why, and a refusal
            // with none was a lost device's (wgpu reports those only to a device-lost
            // callback, which an adopted device keeps for its application).
            Err(wgpu::PollError::WrongSubmissionIndex(..)) => {
                self.check()?;
                Err(Error::DeviceLost {
                    message: "the device refused GPU work without an error: it was lost or destroyed".into(),
                })
            }
        }
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = &self.inner.info;
        write!(f, "Gpu({} on {:?})", info.name, info.backend)
    }
}

/// `d` in seconds, as a person writes it: `600 s`, `0.25 s`.
fn seconds_text(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}
