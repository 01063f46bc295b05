//! Reductions other ops finish with (`shaders/reduce.wgsl`): column sums in two stages
//! (no float atomics) and the mean of a vector.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, WG_1D};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/reduce.wgsl` (`ReduceParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReduceParams {
    /// Rows of the input.
    pub rows: u32,
    /// Columns of the input.
    pub cols: u32,
    /// Rows summed by one thread of `column_sums`.
    pub rows_per_chunk: u32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

/// Rows per chunk of the first stage of a column reduction over `rows` rows: 64, more when
/// the chunks would not fit one grid dimension.
pub(crate) fn rows_per_chunk(gpu: &Gpu, rows: usize) -> usize {
    let max_chunks = gpu.limits().max_compute_workgroups_per_dimension as usize;
    64.max(rows.div_ceil(max_chunks))
}

/// `[ceil(cols / 256), chunks, 1]`: the grid of a kernel with one thread per (column, chunk).
pub(crate) fn column_grid(cols: usize, chunks: usize) -> [u32; 3] {
    [cols.div_ceil(WG_1D as usize) as u32, chunks as u32, 1]
}

fn check_f32(op: &'static str, a: &Tensor) -> Result<()> {
    if a.dtype() != DType::F32 || a.is_empty() {
        return Err(Error::shape(op, "a non-empty f32 tensor", format!("{a:?}")));
    }
    Ok(())
}

/// Sums `partials [chunks, cols]` over its rows into `[cols]` (one pass, one chunk).
pub(crate) fn finish_column_sums(gpu: &Gpu, partials: &Tensor, cols: usize) -> Result<Tensor> {
    let chunks = partials.len() / cols;
    if chunks == 1 {
        return partials.reshape(&[cols]);
    }
    let out = Tensor::uninit(gpu, &[cols], DType::F32)?;
    let params = ReduceParams { rows: chunks as u32, cols: cols as u32, rows_per_chunk: chunks as u32, _pad: 0 };
    gpu.dispatch(Kernel::ColumnSums, &[partials], &[&out], &params, column_grid(cols, 1))?;
    Ok(out)
}

/// `s[j] = Σ_r a[r, j]` for `a` viewed as `[rows, cols]` with `cols` its last axis; the
/// result has shape `[cols]`. Two stages: chunks of rows, then the chunk sums.
pub fn column_sums(gpu: &Gpu, a: &Tensor) -> Result<Tensor> {
    check_f32("column_sums", a)?;
    let cols = a.last_dim();
    let rows = a.len() / cols;
    let per = rows_per_chunk(gpu, rows);
    let chunks = rows.div_ceil(per);
    let partials = Tensor::uninit(gpu, &[chunks, cols], DType::F32)?;
    let params = ReduceParams { rows: rows as u32, cols: cols as u32, rows_per_chunk: per as u32, _pad: 0 };
    gpu.dispatch(Kernel::ColumnSums, &[a], &[&partials], &params, column_grid(cols, chunks))?;
    finish_column_sums(gpu, &partials, cols)
}

/// `y = Σ_i a[i] / n` over all `n` elements of `a`, as a tensor of shape `[1]`. One
/// workgroup does it: meant for per-row losses, not for large tensors.
pub fn mean(gpu: &Gpu, a: &Tensor) -> Result<Tensor> {
    check_f32("mean", a)?;
    let out = Tensor::uninit(gpu, &[1], DType::F32)?;
    let params = ReduceParams { rows: a.len() as u32, cols: 1, ..Default::default() };
    gpu.dispatch(Kernel::Mean, &[a], &[&out], &params, [1, 1, 1])?;
    Ok(out)
}
