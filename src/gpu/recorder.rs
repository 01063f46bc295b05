//! Recording work into the pending command encoder and submitting it (reading results back
//! is `readback.rs`).

use std::sync::Arc;

use super::{Gpu, Kernel, MAX_PARAMS_BYTES, WG_1D, lock, pool};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// On GPUs the pending encoder is submitted once it holds this many commands, so the device
/// starts on the first kernels of a step while the host records the rest (on an H200 a ViT-B
/// MoPPA step took 5.9 ms of wall time instead of 6.8, the demo model's step 2.4 instead
/// of 4.0).
const GPU_PENDING_COMMANDS: usize = 16;
/// On CPU adapters, where recording and running share the cores and early submission
/// gained nothing, only to bound the encoder's memory.
const CPU_PENDING_COMMANDS: usize = 2048;
/// Uploads' staging buffers (host memory, freed once their copies have run) pending at most
/// this many bytes: past it the encoder is submitted and waited for, so loading a large model
/// holds one slice of it in staging, not a second copy of all of it.
const STAGED_BYTES: u64 = 256 << 20;

impl Gpu {
    /// Commands after which the pending encoder is submitted (`PEFT_WGPU_SUBMIT_EVERY`
    /// overrides the default of the adapter's kind; its value was checked when the `Gpu` was
    /// made, by [`submit_every_from_env`]).
    fn pending_commands(&self) -> usize {
        submit_every_from_env().ok().flatten().unwrap_or(if self.inner.info.device_type == wgpu::DeviceType::Cpu {
            CPU_PENDING_COMMANDS
        } else {
            GPU_PENDING_COMMANDS
        })
    }
}

/// `PEFT_WGPU_SUBMIT_EVERY`, read once: `None` when unset or empty, an error naming the
/// variable unless it is a whole number ≥ 1.
pub(crate) fn submit_every_from_env() -> Result<Option<usize>> {
    static N: std::sync::OnceLock<std::result::Result<Option<usize>, String>> = std::sync::OnceLock::new();
    let parsed = N.get_or_init(|| match crate::io::env_text("PEFT_WGPU_SUBMIT_EVERY")? {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v.trim().parse().ok().filter(|&n: &usize| n > 0).map(Some).ok_or(v),
    });
    parsed
        .clone()
        .map_err(|v| Error::invalid("PEFT_WGPU_SUBMIT_EVERY", format!("is `{v}`; expected a whole number ≥ 1")))
}

/// How long a GPU may go without finishing a submission, during a wait, before it is
/// reported as hung, when `PEFT_WGPU_WAIT_SECONDS` is unset: far past any one submission of
/// this crate's work (16 commands), so only a device that stopped answering reaches it. CPU
/// adapters have no limit unless the variable sets one: a submission there carries up to
/// 2048 commands, which for a large model can take many minutes of honest work.
pub const DEFAULT_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `PEFT_WGPU_WAIT_SECONDS`, read once: `Some(None)` for no limit (`0`), `Some(limit)` for a
/// whole number of seconds, `None` when unset or empty (the adapter's default, see
/// [`DEFAULT_WAIT_LIMIT`]), an error naming the variable otherwise.
pub(crate) fn wait_limit_from_env() -> Result<Option<Option<std::time::Duration>>> {
    type Parsed = std::result::Result<Option<Option<std::time::Duration>>, String>;
    static LIMIT: std::sync::OnceLock<Parsed> = std::sync::OnceLock::new();
    let parsed = LIMIT.get_or_init(|| match crate::io::env_text("PEFT_WGPU_WAIT_SECONDS")? {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => Ok(Some(None)),
            Ok(seconds) => Ok(Some(Some(std::time::Duration::from_secs(seconds)))),
            Err(_) => Err(v),
        },
    });
    parsed.clone().map_err(|v| {
        Error::invalid("PEFT_WGPU_WAIT_SECONDS", format!("is `{v}`; expected a whole number of seconds (0: no limit)"))
    })
}

#[derive(Default)]
pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    commands: usize,
    /// Bytes of upload staging buffers recorded since the last submission.
    staged: u64,
    dispatches: u64,
    /// Per kernel entry point: dispatches and seconds, while profiling.
    profile: std::collections::BTreeMap<&'static str, (u64, f64)>,
}

/// Time spent in one kernel while profiling (see [`Gpu::set_profiling`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's entry point.
    pub entry: &'static str,
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Wall seconds of those dispatches, each submitted and waited for alone.
    pub seconds: f64,
}

impl Gpu {
    /// Runs `f` with the pending encoder, creating it if needed; submits when it grows long.
    pub(super) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        self.scoped(|| self.record_in_scope(f));
    }

    /// [`Gpu::record`] for a caller that has opened the error scopes itself.
    fn record_in_scope(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let limit = self.pending_commands();
        let full = {
            let mut rec = lock(&self.inner.recorder);
            let encoder = rec.encoder.get_or_insert_with(|| {
                self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("peft-wgpu") })
            });
            f(encoder);
            rec.commands += 1;
            rec.commands >= limit
        };
        if full {
            self.submit();
        }
    }

    /// Submits the pending encoder, if any, without waiting. The submit turn is held from
    /// taking the encoder until the queue has it, so submissions keep the order in which
    /// threads recorded their work: what another thread records later never reaches the
    /// queue first. The recorder itself is not locked while wgpu submits, so a callback that
    /// wgpu runs inside `Queue::submit` may use this `Gpu`.
    pub(crate) fn submit(&self) -> Option<wgpu::SubmissionIndex> {
        let _turn = self.inner.submit_turn.lock();
        let encoder = {
            let mut rec = lock(&self.inner.recorder);
            rec.commands = 0;
            rec.staged = 0;
            rec.encoder.take()
        }?;
        let index = self.scoped(|| self.inner.queue.submit([encoder.finish()]));
        // Counts finished submissions, so that a long wait can tell a device still working
        // through its queue from one that stopped (`Gpu::wait`).
        let finished = Arc::clone(&self.inner.finished);
        self.inner.queue.on_submitted_work_done(move || {
            finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        Some(index)
    }

    /// Records one dispatch of `kernel` over `workgroups`, binding `inputs` then `outputs` in
    /// the order of [`Kernel::spec`] and passing `params` as immediates.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        inputs: &[&Tensor],
        outputs: &[&Tensor],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<()> {
        let spec = kernel.spec();
        assert!(
            inputs.len() == spec.inputs as usize && outputs.len() == spec.outputs as usize,
            "{kernel:?} binds {} inputs and {} outputs, called with {} and {}",
            spec.inputs,
            spec.outputs,
            inputs.len(),
            outputs.len()
        );
        let bytes = bytemuck::bytes_of(params);
        assert!(
            bytes.len() <= MAX_PARAMS_BYTES as usize && bytes.len().is_multiple_of(4),
            "{kernel:?}: params of {} bytes",
            bytes.len()
        );
        self.check_owns(spec.entry, inputs.iter().chain(outputs).copied())?;
        let max = self.inner.limits.max_compute_workgroups_per_dimension;
        if let Some(&too_many) = workgroups.iter().find(|&&w| w > max) {
            return Err(Error::TooManyWorkgroups { kernel: spec.entry, workgroups: too_many, max });
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let pipe = self.inner.kernels.pipeline(&self.inner.device, kernel)?;
        let entries: Vec<wgpu::BindGroupEntry<'_>> = inputs
            .iter()
            .chain(outputs)
            .enumerate()
            .map(|(i, t)| wgpu::BindGroupEntry { binding: i as u32, resource: t.buffer().as_entire_binding() })
            .collect();
        lock(&self.inner.recorder).dispatches += 1;
        let profiling = self.profiling();
        if profiling {
            self.sync()?;
        }
        let start = std::time::Instant::now();
        self.scoped(|| {
            let bind_group = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(spec.entry),
                layout: &pipe.bind_layout,
                entries: &entries,
            });
            self.record_in_scope(|encoder| {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(spec.entry),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipe.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.set_immediates(0, bytes);
                pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            });
        });
        if profiling {
            self.sync()?;
            let seconds = start.elapsed().as_secs_f64();
            let mut rec = lock(&self.inner.recorder);
            let slot = rec.profile.entry(spec.entry).or_default();
            slot.0 += 1;
            slot.1 += seconds;
        }
        Ok(())
    }

    /// The time per kernel collected while profiling was on, slowest first, and clears it.
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let profile = std::mem::take(&mut lock(&self.inner.recorder).profile);
        let mut list: Vec<KernelTime> = profile
            .into_iter()
            .map(|(entry, (dispatches, seconds))| KernelTime { entry, dispatches, seconds })
            .collect();
        list.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        list
    }

    /// Number of kernel dispatches recorded through this device so far (a diagnostic, e.g.
    /// to check that a fused step records one dispatch); copies and uploads are not counted.
    pub fn dispatch_count(&self) -> u64 {
        lock(&self.inner.recorder).dispatches
    }

    /// Records a dispatch of `threads` invocations of a one-dimensional kernel (workgroup
    /// size [`WG_1D`]); the grid folds into two dimensions when it is long, and the shader
    /// recovers the index as `gid.x + gid.y * num_workgroups.x * WG`.
    pub(crate) fn dispatch_1d<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        inputs: &[&Tensor],
        outputs: &[&Tensor],
        params: &P,
        threads: usize,
    ) -> Result<()> {
        self.dispatch(kernel, inputs, outputs, params, self.grid_1d(threads, WG_1D))
    }

    /// The workgroup grid for `threads` invocations in workgroups of `wg`: one row, or as
    /// few rows as the device's limit per dimension allows, of equal length, so that fewer
    /// than a row's worth of invocations fall past the end (the shaders' index
    /// `gid.x + gid.y·nwg.x·wg` then stays below 2³² for every tensor, see
    /// [`super::MAX_TENSOR_BYTES`]).
    pub(crate) fn grid_1d(&self, threads: usize, wg: u32) -> [u32; 3] {
        let groups = threads.div_ceil(wg as usize) as u64;
        let max = u64::from(self.inner.limits.max_compute_workgroups_per_dimension);
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            let rows = groups.div_ceil(max);
            [groups.div_ceil(rows) as u32, rows.min(u64::from(u32::MAX)) as u32, 1]
        }
    }

    /// Records a copy of `count` elements from `src[src_offset..]` to `dst[dst_offset..]`.
    pub(crate) fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, count: usize) {
        assert!(src_offset + count <= src.len() && dst_offset + count <= dst.len(), "copy out of bounds");
        if count == 0 {
            return;
        }
        let size = src.dtype().size();
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(
                src.buffer(),
                (src_offset * size) as u64,
                dst.buffer(),
                (dst_offset * size) as u64,
                (count * size) as u64,
            );
        });
    }

    /// Records a write of `bytes` to the start of `dst`, ordered after all work recorded so
    /// far (unlike `Queue::write_buffer`, which would run before it).
    pub(crate) fn upload(&self, bytes: &[u8], dst: &wgpu::Buffer) {
        if bytes.is_empty() {
            return;
        }
        let padded = (bytes.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        self.scoped(|| {
            let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("peft-wgpu upload"),
                size: padded,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            // Only a buffer that could not be made (out of memory: the scope caught why) is
            // not mapped here.
            let Ok(mut view) = staging.get_mapped_range_mut(..) else { return };
            view.slice(..bytes.len()).copy_from_slice(bytes);
            drop(view);
            staging.unmap();
            self.record(|encoder| encoder.copy_buffer_to_buffer(&staging, 0, dst, 0, padded));
        });
        let staged = {
            let mut rec = lock(&self.inner.recorder);
            rec.staged += padded;
            rec.staged
        };
        if staged > STAGED_BYTES && !self.abandoned() {
            // Errors stay stored for the next check; a lost device shows there too, and so
            // does a device that stopped answering (after which no upload waits again).
            let index = self.submit();
            if let Err(wgpu::PollError::Timeout) = self.poll_until(index.as_ref()) {
                let e = self.timed_out();
                lock(&self.inner.errors).push(e);
            }
        }
    }

    /// Records zeroing the whole of `dst`.
    pub(crate) fn clear(&self, dst: &wgpu::Buffer) {
        self.record(|encoder| encoder.clear_buffer(dst, 0, None));
    }

    /// The largest tensor, in bytes, and the limit that sets it: one storage binding, one
    /// buffer, or [`super::MAX_TENSOR_BYTES`] (kernels index elements and pass counts as u32,
    /// so no count can wrap).
    pub fn max_tensor_bytes(&self) -> (u64, &'static str) {
        let l = &self.inner.limits;
        [
            (l.max_storage_buffer_binding_size, "max_storage_buffer_binding_size"),
            (l.max_buffer_size, "max_buffer_size"),
            (super::MAX_TENSOR_BYTES, super::MAX_TENSOR_LIMIT),
        ]
        .into_iter()
        .min_by_key(|&(v, _)| v)
        .expect("three candidates")
    }

    /// Whether `buffer` came from this device's pool.
    pub(crate) fn owns(&self, buffer: &pool::PooledBuffer) -> bool {
        buffer.is_from(&self.inner.pool)
    }

    /// Fails, naming `what`, when one of `tensors` lives on another device: a wgpu buffer of
    /// another device cannot be bound here (it would fail inside wgpu, or read the wrong
    /// memory).
    pub(crate) fn check_owns<'a>(&self, what: &str, tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<()> {
        match tensors.into_iter().find(|t| !t.is_on(self)) {
            None => Ok(()),
            Some(t) => Err(Error::invalid(
                what,
                format!("{t:?} lives on another Gpu; a tensor works only on the device that made it"),
            )),
        }
    }

    /// Allocates a device buffer of at least `bytes` bytes from the pool; sizes beyond
    /// [`Gpu::max_tensor_bytes`] are refused with [`Error::TooLarge`] naming `what`.
    pub(crate) fn alloc(&self, bytes: u64, what: &str) -> Result<Arc<pool::PooledBuffer>> {
        let (limit, name) = self.max_tensor_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { what: what.to_string(), bytes, limit: name, max: limit });
        }
        let class = pool::size_class(bytes).min(limit.max(16));
        let taken = lock(self.pool()).take(class);
        let raw = match taken {
            Some(raw) => raw,
            None => {
                let (raw, errors) = super::catch_errors(&self.inner.device, || {
                    self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("peft-wgpu tensor"),
                        size: class,
                        usage: pool::USAGE,
                        mapped_at_creation: false,
                    })
                });
                if let Some(e) = errors.into_iter().next() {
                    return Err(super::device_error(e, &format!("allocating {bytes} bytes for {what}")));
                }
                lock(self.pool()).count_live(class);
                raw
            }
        };
        Ok(Arc::new(pool::PooledBuffer::new(raw, class, Arc::clone(self.pool()))))
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
