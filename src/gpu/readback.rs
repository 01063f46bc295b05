//! Reading data back from the device: every download goes through [`Gpu::start_read`]
//! (a copy into a mapped staging buffer), waited for at once ([`Gpu::read`]) or later
//! ([`Gpu::read_later`]).

use super::Gpu;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// How long a read-back waits for its mapping callback between polls of the device.
const READBACK_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a read-back waits for its mapping callback, once its work has finished, before
/// it gives up on the device.
const READBACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

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
        self.gpu.wait(self.index.as_ref())?;
        // The mapping's callback runs on whichever thread polled the device: usually this
        // one, in `wait`, but an application thread polling the same device may have taken
        // it and be about to run it, so wait for it, polling again now and then.
        let mut waited = std::time::Duration::ZERO;
        let mapped = loop {
            match self.rx.recv_timeout(READBACK_POLL) {
                Ok(mapped) => break mapped,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if waited < READBACK_PATIENCE => {
                    waited += READBACK_POLL;
                    self.gpu.wait(None)?;
                }
                Err(_) => {
                    let message = format!("a read-back still had no answer {waited:?} after its work finished");
                    return Err(Error::DeviceLost { message });
                }
            }
        };
        if let Err(e) = mapped {
            return Err(Error::Gpu { during: "reading a tensor back".into(), message: e.to_string() });
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
