//! Reading data back from the device: every download goes through [`Gpu::start_read`]
//! (a copy into a mapped staging buffer), waited for at once ([`Gpu::read`]) or later
//! ([`Gpu::read_later`]).

use super::Gpu;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// A read-back started by [`Gpu::read_later`].
pub struct PendingRead {
    gpu: Gpu,
    staging: wgpu::Buffer,
    index: Option<wgpu::SubmissionIndex>,
    bytes: usize,
    rx: std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl PendingRead {
    /// Waits for the submission that carried the copy (not for later ones) and returns the
    /// values.
    pub fn wait(self) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.wait_bytes()?))
    }

    fn wait_bytes(self) -> Result<Vec<u8>> {
        self.gpu.wait(self.index)?;
        match self.rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Gpu { during: "reading a tensor back".into(), message: e.to_string() }),
            Err(_) => return Err(Error::DeviceLost { message: "the read-back never completed".into() }),
        }
        let view = self
            .staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu { during: "reading a tensor back".into(), message: e.to_string() })?;
        Ok(view[..self.bytes].to_vec())
    }
}

impl std::fmt::Debug for PendingRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingRead({} bytes)", self.bytes)
    }
}

impl Gpu {
    /// Records a copy of the first `bytes` bytes of `buffer` (a `COPY_SRC` buffer) into a
    /// staging buffer, submits everything recorded so far and starts mapping the staging
    /// buffer, without waiting.
    fn start_read(&self, buffer: &wgpu::Buffer, bytes: u64) -> PendingRead {
        let padded = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT).max(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.scoped(|| {
            self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("peft-wgpu download"),
                size: padded,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        if bytes > 0 {
            self.record(|encoder| encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, padded));
        }
        let index = self.submit();
        let (tx, rx) = std::sync::mpsc::channel();
        self.scoped(|| {
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                // The receiver lives in the PendingRead until it is waited for.
                let _ = tx.send(r);
            });
        });
        PendingRead { gpu: self.clone(), staging, index, bytes: bytes as usize, rx }
    }

    /// The first `bytes` bytes of `buffer` (a `COPY_SRC` buffer), after all recorded work.
    pub(crate) fn read_buffer(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.start_read(buffer, bytes).wait_bytes()
    }

    /// Submits all recorded work, waits for it and returns the contents of `t` as raw bytes.
    pub(crate) fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        self.read_buffer(t.buffer(), (t.len() * t.dtype().size()) as u64)
    }

    /// Starts reading an f32 tensor back: records a copy of it, submits everything recorded
    /// so far and returns without waiting. [`PendingRead::wait`] then waits only for that
    /// submission, so work recorded and submitted after this call keeps the device busy
    /// meanwhile (a training loop reads step `t`'s loss while step `t + 1` runs).
    pub fn read_later(&self, t: &Tensor) -> Result<PendingRead> {
        self.check_owns("read_later", [t])?;
        if t.dtype() != DType::F32 {
            return Err(Error::shape("read_later", "an f32 tensor", format!("{:?}", t.dtype())));
        }
        Ok(self.start_read(t.buffer(), (t.len() * t.dtype().size()) as u64))
    }

    /// Reads an f32 tensor back to the host (submits and waits for all recorded work).
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.check_owns("read", [t])?;
        if t.dtype() != DType::F32 {
            return Err(Error::shape("read", "an f32 tensor", format!("{:?}", t.dtype())));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(t)?))
    }

    /// Reads a u32 tensor back to the host (submits and waits for all recorded work).
    pub fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        self.check_owns("read_u32", [t])?;
        if t.dtype() != DType::U32 {
            return Err(Error::shape("read_u32", "a u32 tensor", format!("{:?}", t.dtype())));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(t)?))
    }
}
