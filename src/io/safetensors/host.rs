//! [`HostTensor`]: an f32 array on the host with its shape, as tensors are read from files
//! and made before they are uploaded.

use crate::error::{Error, Result};

/// An f32 array on the host with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from values and shape; errs when the counts differ.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<HostTensor> {
        if crate::tensor::checked_numel(&shape) != Some(data.len()) {
            return Err(Error::shape("HostTensor::new", format!("{} values for {shape:?}", data.len()), "a mismatch"));
        }
        Ok(HostTensor { shape, data })
    }

    /// Zeros of `shape`; an error when its size overflows or is more than memory can hold.
    pub fn zeros(shape: &[usize]) -> Result<HostTensor> {
        let too_large =
            || Error::shape("HostTensor::zeros", "a shape whose values fit in memory", format!("{shape:?}"));
        let n = crate::tensor::checked_numel(shape).ok_or_else(too_large)?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| too_large())?;
        data.resize(n, 0.0);
        Ok(HostTensor { shape: shape.to_vec(), data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Fails with `invalid {what}: holds V at index I`, naming the first value that is not
    /// finite.
    pub fn check_finite(&self, what: impl FnOnce() -> String) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(Error::invalid(what(), format!("holds {} at index {i}", self.data[i]))),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
