//! Device tensors: a pooled buffer with a shape, row-major and contiguous.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, PooledBuffer};
use crate::ops::elementwise::EwParams;

/// Element type of a [`Tensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float: every activation, weight and gradient.
    F32,
    /// 32-bit unsigned integer: class labels and indices.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        4
    }
}

/// A row-major, contiguous array on the device. Cloning shares the buffer; ops never write
/// into their inputs, so shared buffers are safe. The buffer returns to its [`Gpu`]'s pool
/// when the last clone drops.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

/// Number of elements of `shape` (of a tensor that exists, so the product fits; see
/// [`checked_numel`] for a shape from elsewhere).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of `shape`, `None` when the product overflows `usize` (a shape with
/// a zero side has none, whatever its other sides).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl Tensor {
    /// A tensor whose contents are unspecified (NaN when the `Gpu` poisons new buffers); for
    /// kernels that write every element.
    pub(crate) fn uninit(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        // A shape whose size overflows asks for u64::MAX bytes, which `alloc` refuses by name.
        // A zero side holds nothing, but the other sides' product must still fit, so that
        // every product of a tensor's sides does (ops multiply leading or trailing axes).
        let sides = shape.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = match sides {
            Some(_) if shape.contains(&0) => 0,
            Some(n) => (n as u64).saturating_mul(dtype.size() as u64),
            None => u64::MAX,
        };
        let buf = gpu.alloc(bytes, &format!("a {dtype:?} tensor of shape {shape:?}"))?;
        let n = numel(shape);
        let t = Tensor { buf, shape: shape.to_vec(), dtype };
        if gpu.poison_new_buffers() && n > 0 {
            let params = EwParams { n: n as u32, alpha: f32::NAN, ..Default::default() };
            gpu.dispatch_1d(Kernel::Fill, &[], &[&t], &params, n)?;
        }
        Ok(t)
    }

    /// An f32 tensor of `shape` filled with zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::uninit(gpu, shape, DType::F32)?;
        gpu.clear(t.buffer());
        Ok(t)
    }

    /// An f32 tensor of `shape` filled with `value`.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
        let t = Tensor::uninit(gpu, shape, DType::F32)?;
        let n = t.len();
        let params = EwParams { n: n as u32, alpha: value, ..Default::default() };
        gpu.dispatch_1d(Kernel::Fill, &[], &[&t], &params, n)?;
        Ok(t)
    }

    /// Uploads `data` as an f32 tensor of `shape`.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, bytemuck::cast_slice(data), data.len(), shape, DType::F32)
    }

    /// Uploads `data` as a u32 tensor of `shape`.
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, bytemuck::cast_slice(data), data.len(), shape, DType::U32)
    }

    fn from_bytes(gpu: &Gpu, bytes: &[u8], len: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if checked_numel(shape) != Some(len) {
            return Err(Error::shape("upload", format!("as many values as shape {shape:?} holds"), format!("{len}")));
        }
        let t = Tensor::uninit(gpu, shape, dtype)?;
        gpu.upload(bytes, t.buffer());
        Ok(t)
    }

    /// Reads the tensor back as f32 values (submits and waits for pending work).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        gpu.read(self)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the last axis (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The same data under another shape with as many elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel(shape) != Some(self.len()) {
            return Err(Error::shape("reshape", format!("{} elements", self.len()), format!("{shape:?}")));
        }
        Ok(Tensor { buf: Arc::clone(&self.buf), shape: shape.to_vec(), dtype: self.dtype })
    }

    /// A new tensor with the same shape and a copy of the contents (recorded, not waited for).
    pub fn deep_copy(&self, gpu: &Gpu) -> Result<Tensor> {
        gpu.check_owns("deep_copy", [self])?;
        let t = Tensor::uninit(gpu, &self.shape, self.dtype)?;
        gpu.copy(self, 0, &t, 0, self.len());
        Ok(t)
    }

    /// Whether two tensors share a device buffer.
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buf.raw()
    }

    /// A handle that tells the buffer's version while the buffer lives, without keeping it.
    pub(crate) fn watch(&self) -> VersionWatch {
        VersionWatch { buf: Arc::downgrade(&self.buf), version: self.buf.version(), shape: self.shape.clone() }
    }

    /// Marks the buffer's contents as changed in place: a tape that recorded this tensor
    /// before refuses to run its backward pass.
    pub(crate) fn mark_changed(&self) {
        self.buf.bump_version();
    }

    /// Whether this tensor lives on `gpu` (was made by it or by one of its clones). Ops and
    /// reads refuse tensors of another device.
    pub fn is_on(&self, gpu: &Gpu) -> bool {
        gpu.owns(&self.buf)
    }
}

/// A tensor's buffer version when it was watched ([`Tensor::watch`]).
pub(crate) struct VersionWatch {
    buf: std::sync::Weak<PooledBuffer>,
    version: u64,
    shape: Vec<usize>,
}

impl VersionWatch {
    /// The shape of the watched tensor, when its buffer still lives and was changed in place
    /// since.
    pub(crate) fn changed(&self) -> Option<&[usize]> {
        let buf = self.buf.upgrade()?;
        (buf.version() != self.version).then_some(&self.shape)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}
