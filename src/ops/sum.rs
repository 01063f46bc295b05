//! Sums (`shaders/sum.wgsl`): over leading axes (bias gradients, broadcast backward) and over
//! all elements to a scalar, both as trees of partial sums rather than one long serial loop.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, WG_1D};
use crate::ops::{elementwise, shape};
use crate::tensor::{DType, Tensor, numel};

/// Immediates of `shaders/sum.wgsl` (`SumParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SumParams {
    /// Rows of the input (`sum_all`: its length).
    pub rows: u32,
    /// Columns of the input (`sum_all`: the number of blocks).
    pub cols: u32,
    /// Rows summed by one thread of `sum_rows`.
    pub per_chunk: u32,
    /// Factor applied to each output.
    pub scale: f32,
}

/// Elements one workgroup of `sum_all` adds (`BLOCK` in the shader).
const BLOCK: usize = 2048;
/// Rows one thread of `sum_rows` adds when the grid allows.
const ROWS_PER_CHUNK: usize = 64;

fn check(op: &'static str, a: &Tensor) -> Result<()> {
    if a.dtype() != DType::F32 {
        return Err(Error::shape(op, "an f32 tensor", format!("{a:?}")));
    }
    u32::try_from(a.len()).map_err(|_| Error::invalid(op, format!("{} elements exceed u32", a.len())))?;
    Ok(())
}

/// Rows per chunk of the first stage of a column reduction over `rows` rows: 64, more when
/// the chunks would not fit one grid dimension.
pub(crate) fn rows_per_chunk(gpu: &Gpu, rows: usize) -> usize {
    let max_chunks = gpu.limits().max_compute_workgroups_per_dimension as usize;
    ROWS_PER_CHUNK.max(rows.div_ceil(max_chunks))
}

/// `[ceil(cols / 256), chunks, 1]`: the grid of a kernel with one thread per (column, chunk).
pub(crate) fn column_grid(cols: usize, chunks: usize) -> [u32; 3] {
    [cols.div_ceil(WG_1D as usize) as u32, chunks as u32, 1]
}

fn rows_pass(gpu: &Gpu, a: &Tensor, rows: usize, cols: usize, scale: f32) -> Result<Tensor> {
    let per_chunk = rows_per_chunk(gpu, rows).min(rows.max(1));
    let chunks = rows.div_ceil(per_chunk).max(1);
    let out = Tensor::uninit(gpu, &[chunks, cols], DType::F32)?;
    let params = SumParams { rows: rows as u32, cols: cols as u32, per_chunk: per_chunk as u32, scale };
    gpu.dispatch(Kernel::SumRows, &[a], &[&out], &params, column_grid(cols, chunks))?;
    Ok(out)
}

/// `s[j] = Σ_r a[r, j]` for `a` viewed as `[rows, cols]` (`cols` must divide its length; an
/// empty `a` gives `cols` zeros):
/// the sum over the leading axes down to the trailing `cols` elements. Shape `[cols]`.
/// Chunks of 64 rows first, then the chunk sums.
pub fn sum_rows(gpu: &Gpu, a: &Tensor, cols: usize) -> Result<Tensor> {
    check("sum_rows", a)?;
    // No rows sum to zeros; rows of no columns to nothing.
    if a.is_empty() {
        return Tensor::zeros(gpu, &[cols]);
    }
    if cols == 0 || !a.len().is_multiple_of(cols) {
        return Err(Error::shape("sum_rows", format!("a length divisible by {cols}"), format!("{a:?}")));
    }
    let mut partial = rows_pass(gpu, a, a.len() / cols, cols, 1.0)?;
    while partial.len() > cols {
        partial = rows_pass(gpu, &partial, partial.len() / cols, cols, 1.0)?;
    }
    partial.reshape(&[cols])
}

/// The sum of `a` over its leading axes down to its last `k` axes: `s[t] = Σ_lead a[lead, t]`,
/// shape `a.shape()[rank - k..]`.
pub fn sum_to_trailing(gpu: &Gpu, a: &Tensor, k: usize) -> Result<Tensor> {
    let rank = a.shape().len();
    if k > rank {
        return Err(Error::shape("sum_to_trailing", format!("at most {rank} trailing axes"), format!("{k}")));
    }
    let trailing = &a.shape()[rank - k..];
    sum_rows(gpu, a, numel(trailing))?.reshape(trailing)
}

/// `scale · Σ_i a[i]` as a tensor of shape `[1]` (0 for an empty tensor). Each pass adds
/// blocks of 2048 elements with a workgroup tree, until one value is left.
fn sum_all_scaled(gpu: &Gpu, a: &Tensor, scale: f32) -> Result<Tensor> {
    check("sum_all", a)?;
    if a.is_empty() {
        return Tensor::zeros(gpu, &[1]);
    }
    let mut current = a.reshape(&[a.len()])?;
    loop {
        let n = current.len();
        let blocks = n.div_ceil(BLOCK);
        let last = blocks == 1;
        let out = Tensor::uninit(gpu, &[blocks], DType::F32)?;
        let params =
            SumParams { rows: n as u32, cols: blocks as u32, per_chunk: 0, scale: if last { scale } else { 1.0 } };
        gpu.dispatch(Kernel::SumAll, &[&current], &[&out], &params, gpu.grid_1d(blocks, 1))?;
        if last {
            return Ok(out);
        }
        current = out;
    }
}

/// `Σ_i a[i]`, shape `[1]`.
pub fn sum_all(gpu: &Gpu, a: &Tensor) -> Result<Tensor> {
    sum_all_scaled(gpu, a, 1.0)
}

/// `Σ_i a[i] / n`, shape `[1]`.
pub fn mean_all(gpu: &Gpu, a: &Tensor) -> Result<Tensor> {
    if a.is_empty() {
        return Err(Error::shape("mean_all", "a non-empty tensor", format!("{a:?}")));
    }
    sum_all_scaled(gpu, a, 1.0 / a.len() as f32)
}

/// Tape op `s = Σ_lead x[lead, t]` over all but the last `k` axes; backward
/// `∂x[lead, t] = ∂s[t]` (the gradient broadcast back over the summed axes).
pub fn sum_to_trailing_var(tape: &mut Tape, x: &Var, k: usize) -> Result<Var> {
    let y = sum_to_trailing(tape.gpu(), x.value(), k)?;
    let shape = x.shape().to_vec();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(shape::expand_scaled(gpu, g, &shape, 1.0)?)])))
}

/// Tape op `s = Σ_i x[i]` (shape `[1]`); backward `∂x[i] = ∂s`.
pub fn sum_var(tape: &mut Tape, x: &Var) -> Result<Var> {
    let y = sum_all(tape.gpu(), x.value())?;
    let shape = x.shape().to_vec();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(shape::expand_scaled(gpu, g, &shape, 1.0)?)])))
}

/// Tape op `s = Σ_i x[i] / n` (shape `[1]`); backward `∂x[i] = ∂s / n`.
pub fn mean_var(tape: &mut Tape, x: &Var) -> Result<Var> {
    let y = mean_all(tape.gpu(), x.value())?;
    let shape = x.shape().to_vec();
    let scale = 1.0 / x.value().len() as f32;
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(shape::expand_scaled(gpu, g, &shape, scale)?)])))
}

/// `Σ_i x[i]² / n` on the tape, as `mean(x ⊙ x)`; backward `∂x = 2x·∂s / n`.
pub fn mean_square_var(tape: &mut Tape, x: &Var) -> Result<Var> {
    let sq = elementwise::mul_var(tape, x, x)?;
    mean_var(tape, &sq)
}
