//! Device time of recorded work from GPU timestamps, for benchmarks.

use super::Gpu;
use crate::error::{Error, Result};

/// Two timestamps around a stretch of recorded work: [`GpuTimer::start`] before it,
/// [`GpuTimer::stop`] after it, [`GpuTimer::elapsed_ms`] reads the device time between them.
/// Each timestamp is an empty compute pass that writes it (timestamps at pass boundaries are
/// what `TIMESTAMP_QUERY` guarantees), so the time covers every pass recorded in between,
/// and any idle gap of the device between them.
pub struct GpuTimer {
    /// The device the timer was made on, the only one it can time.
    gpu: Gpu,
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    period_ns: f64,
    /// Which timestamps are recorded: [`NONE`], [`STARTED`] or [`STOPPED`] (after a start).
    marks: std::sync::atomic::AtomicU8,
}

const NONE: u8 = 0;
const STARTED: u8 = 1;
const STOPPED: u8 = 2;

impl Gpu {
    /// A timer, when the device was created with timestamp queries; `None` otherwise.
    pub fn timer(&self) -> Option<GpuTimer> {
        let device = &self.inner.device;
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let (queries, resolved) = self.scoped(|| {
            let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("peft-wgpu timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("peft-wgpu timer"),
                size: 2 * wgpu::QUERY_SIZE as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (queries, resolved)
        });
        let period_ns = f64::from(self.inner.queue.get_timestamp_period());
        Some(GpuTimer { gpu: self.clone(), queries, resolved, period_ns, marks: NONE.into() })
    }
}

impl GpuTimer {
    /// Fails unless `gpu` is the device the timer was made on: its queries exist only there.
    fn check(&self, gpu: &Gpu) -> Result<()> {
        if std::sync::Arc::ptr_eq(&self.gpu.inner, &gpu.inner) {
            Ok(())
        } else {
            Err(Error::invalid("GpuTimer", "it was made by another Gpu; make one with this Gpu's timer()"))
        }
    }

    fn mark(&self, gpu: &Gpu, index: u32) -> Result<()> {
        self.check(gpu)?;
        gpu.record(|encoder| {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(index),
                end_of_pass_write_index: None,
            };
            drop(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("peft-wgpu timestamp"),
                timestamp_writes: Some(writes),
            }));
        });
        Ok(())
    }

    /// Records the start timestamp (on the `Gpu` that made the timer; another is an error).
    pub fn start(&self, gpu: &Gpu) -> Result<()> {
        self.mark(gpu, 0)?;
        self.marks.store(STARTED, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Records the stop timestamp (on the `Gpu` that made the timer; another is an error, and
    /// so is a stop with no start before it).
    pub fn stop(&self, gpu: &Gpu) -> Result<()> {
        if self.marks.load(std::sync::atomic::Ordering::Relaxed) == NONE {
            return Err(Error::invalid("GpuTimer::stop", "no start was recorded before it"));
        }
        self.mark(gpu, 1)?;
        self.marks.store(STOPPED, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Milliseconds of device time between the last start and the stop after it (waits for
    /// the device); an error unless both were recorded, in that order.
    pub fn elapsed_ms(&self, gpu: &Gpu) -> Result<f64> {
        self.check(gpu)?;
        if self.marks.load(std::sync::atomic::Ordering::Relaxed) != STOPPED {
            return Err(Error::invalid("GpuTimer::elapsed_ms", "needs a start and then a stop recorded"));
        }
        gpu.record(|encoder| encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0));
        let bytes = gpu.read_buffer(&self.resolved, 2 * wgpu::QUERY_SIZE as u64)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * self.period_ns * 1e-6)
    }
}
