//! Shape ops (`shaders/shape.wgsl`): reshape (no copy), permute, concat and slice along an
//! axis, and broadcasting over leading axes, each with its backward rule.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor, numel};

/// Immediates of `permute` (`PermuteParams` in `shaders/shape.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PermuteParams {
    /// Number of elements.
    pub n: u32,
    /// Output axes 1..3 (axis 0 is implied).
    pub d: [u32; 3],
    /// Input strides of the axes that land at output positions 0..3.
    pub s: [u32; 4],
}

/// Immediates of `copy_block` (`BlockParams` in `shaders/shape.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockParams {
    /// Elements copied: `outer · len · inner`.
    pub n: u32,
    /// Length of the block along the axis.
    pub len: u32,
    /// Elements after the axis.
    pub inner: u32,
    /// Source length of the axis.
    pub src_axis: u32,
    /// Destination length of the axis.
    pub dst_axis: u32,
    /// First source index along the axis.
    pub src_off: u32,
    /// First destination index along the axis.
    pub dst_off: u32,
    /// Padding to 32 bytes.
    pub _pad: u32,
}

/// Immediates of `add_broadcast` and `expand` (`BroadcastParams` in `shaders/shape.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BroadcastParams {
    /// Elements of the output.
    pub n: u32,
    /// Elements of the broadcast operand.
    pub inner: u32,
    /// Scale (`expand` only).
    pub alpha: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

fn f32_tensor(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, "an f32 tensor", format!("{t:?}")));
    }
    u32::try_from(t.len()).map_err(|_| Error::invalid(op, format!("{} elements exceed u32", t.len())))?;
    Ok(())
}

/// Tape op: the same data under `shape` (no copy); backward reshapes `∂y` back.
pub fn reshape_var(tape: &mut Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let y = x.value().reshape(shape)?;
    let back = x.shape().to_vec();
    Ok(tape.push(y, &[x], move |_, g| Ok(vec![Some(g.reshape(&back)?)])))
}

/// `y = x` with its axes reordered: axis `i` of `y` is axis `perm[i]` of `x` (rank ≤ 4).
pub fn permute(gpu: &Gpu, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    f32_tensor("permute", x)?;
    let rank = x.shape().len();
    let mut seen = [false; 4];
    let valid =
        rank <= 4 && perm.len() == rank && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(Error::shape("permute", format!("a permutation of 0..{rank} (rank ≤ 4)"), format!("{perm:?}")));
    }
    let strides: Vec<usize> = (0..rank).map(|i| numel(&x.shape()[i + 1..])).collect();
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    // Pad in front to rank 4 with axes of length 1.
    let pad = 4 - rank;
    let dim = |i: usize| if i < pad { 1 } else { out_shape[i - pad] as u32 };
    let stride = |i: usize| if i < pad { 0 } else { strides[perm[i - pad]] as u32 };
    let params = PermuteParams {
        n: x.len() as u32,
        d: [dim(1), dim(2), dim(3)],
        s: [stride(0), stride(1), stride(2), stride(3)],
    };
    let y = Tensor::uninit(gpu, &out_shape, DType::F32)?;
    gpu.dispatch_1d(Kernel::Permute, &[x], &[&y], &params, x.len())?;
    Ok(y)
}

/// Tape op [`permute`]; backward permutes `∂y` by the inverse permutation.
pub fn permute_var(tape: &mut Tape, x: &Var, perm: &[usize]) -> Result<Var> {
    let y = permute(tape.gpu(), x.value(), perm)?;
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(permute(gpu, g, &inverse)?)])))
}

/// Copies `src[.., src_off..src_off + len, ..]` into `dst[.., dst_off.., ..]` along `axis`
/// (both tensors agree on every other axis; checked by the callers).
fn copy_block(
    gpu: &Gpu,
    src: &Tensor,
    src_off: usize,
    dst: &Tensor,
    dst_off: usize,
    axis: usize,
    len: usize,
) -> Result<()> {
    let inner = numel(&src.shape()[axis + 1..]);
    let outer = numel(&src.shape()[..axis]);
    let n = outer * len * inner;
    let params = BlockParams {
        n: n as u32,
        len: len as u32,
        inner: inner as u32,
        src_axis: src.shape()[axis] as u32,
        dst_axis: dst.shape()[axis] as u32,
        src_off: src_off as u32,
        dst_off: dst_off as u32,
        _pad: 0,
    };
    gpu.dispatch_1d(Kernel::CopyBlock, &[src], &[dst], &params, n)
}

/// `y = [x_0 | x_1 | …]` along `axis`: every input has the same shape except along `axis`.
pub fn concat(gpu: &Gpu, inputs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = inputs.first().ok_or_else(|| Error::shape("concat", "at least one input", "none"))?;
    let rank = first.shape().len();
    let same_but_axis =
        |t: &Tensor| t.shape().len() == rank && (0..rank).all(|i| i == axis || t.shape()[i] == first.shape()[i]);
    if axis >= rank || !inputs.iter().all(|t| same_but_axis(t)) {
        let got: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        return Err(Error::shape("concat", format!("shapes equal except along axis {axis}"), format!("{got:?}")));
    }
    for t in inputs {
        f32_tensor("concat", t)?;
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = inputs.iter().try_fold(0usize, |sum, t| sum.checked_add(t.shape()[axis])).ok_or_else(|| {
        let got: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        Error::shape("concat", format!("lengths along axis {axis} whose sum fits usize"), format!("{got:?}"))
    })?;
    let y = Tensor::uninit(gpu, &shape, DType::F32)?;
    let mut offset = 0;
    for t in inputs {
        copy_block(gpu, t, 0, &y, offset, axis, t.shape()[axis])?;
        offset += t.shape()[axis];
    }
    Ok(y)
}

/// Tape op [`concat()`]; backward slices `∂y` back into one piece per input.
pub fn concat_var(tape: &mut Tape, inputs: &[&Var], axis: usize) -> Result<Var> {
    let values: Vec<&Tensor> = inputs.iter().map(|v| v.value()).collect();
    let y = concat(tape.gpu(), &values, axis)?;
    let pieces: Vec<(usize, bool)> = inputs.iter().map(|v| (v.shape()[axis], v.requires_grad())).collect();
    Ok(tape.push(y, inputs, move |gpu, g| {
        let mut offset = 0;
        let mut grads = Vec::with_capacity(pieces.len());
        for &(len, need) in &pieces {
            grads.push(need.then(|| slice(gpu, g, axis, offset, len)).transpose()?);
            offset += len;
        }
        Ok(grads)
    }))
}

/// `y = x[.., start..start + len, ..]` along `axis`.
pub fn slice(gpu: &Gpu, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    f32_tensor("slice", x)?;
    let rank = x.shape().len();
    if axis >= rank || start.checked_add(len).is_none_or(|end| end > x.shape()[axis]) {
        return Err(Error::shape(
            "slice",
            format!("{start}..{start}+{len} within axis {axis}"),
            format!("{:?}", x.shape()),
        ));
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let y = Tensor::uninit(gpu, &shape, DType::F32)?;
    copy_block(gpu, x, start, &y, 0, axis, len)?;
    Ok(y)
}

/// Tape op [`slice()`]; backward writes `∂y` into zeros of `x`'s shape at the same place.
pub fn slice_var(tape: &mut Tape, x: &Var, axis: usize, start: usize, len: usize) -> Result<Var> {
    let y = slice(tape.gpu(), x.value(), axis, start, len)?;
    let shape = x.shape().to_vec();
    Ok(tape.push(y, &[x], move |gpu, g| {
        let gx = Tensor::zeros(gpu, &shape)?;
        copy_block(gpu, g, 0, &gx, start, axis, len)?;
        Ok(vec![Some(gx)])
    }))
}

/// `shape` without its leading axes of length 1.
fn strip_ones(shape: &[usize]) -> &[usize] {
    let lead = shape.iter().take_while(|&&d| d == 1).count();
    &shape[lead..]
}

/// Whether `small` broadcasts to `big` by repeating over leading axes: `big` ends with
/// `small` once `small`'s leading 1s are dropped.
fn broadcasts_to(small: &[usize], big: &[usize]) -> bool {
    small.len() <= big.len().max(1) && big.ends_with(strip_ones(small))
}

/// `y = alpha · x` repeated over leading axes up to `shape` (`x` `[1, 1, C]` → `[B, 1, C]`,
/// or a scalar `[1]` → anything).
pub(crate) fn expand_scaled(gpu: &Gpu, x: &Tensor, shape: &[usize], alpha: f32) -> Result<Tensor> {
    f32_tensor("expand", x)?;
    if !broadcasts_to(x.shape(), shape) {
        return Err(Error::shape("expand", format!("a shape that broadcasts to {shape:?}"), format!("{x:?}")));
    }
    let y = Tensor::uninit(gpu, shape, DType::F32)?;
    let n = y.len();
    let params = BroadcastParams { n: n as u32, inner: x.len().max(1) as u32, alpha, _pad: 0 };
    gpu.dispatch_1d(Kernel::Expand, &[x], &[&y], &params, n)?;
    Ok(y)
}

/// `y = x` repeated over new or length-1 leading axes up to `shape`.
pub fn expand(gpu: &Gpu, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    expand_scaled(gpu, x, shape, 1.0)
}

/// Tape op [`expand`]; backward sums `∂y` over the repeated axes.
pub fn expand_var(tape: &mut Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let y = expand(tape.gpu(), x.value(), shape)?;
    let back = x.shape().to_vec();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(sum::sum_rows(gpu, g, numel(&back))?.reshape(&back)?)])))
}

/// `y = x + e` with `e` broadcast over the leading axes of `x` (`e` `[T, C]` or `[1, T, C]`
/// against `x` `[B, T, C]`).
pub fn add_broadcast(gpu: &Gpu, x: &Tensor, e: &Tensor) -> Result<Tensor> {
    f32_tensor("add_broadcast", x)?;
    f32_tensor("add_broadcast", e)?;
    if !broadcasts_to(e.shape(), x.shape()) || e.is_empty() {
        return Err(Error::shape(
            "add_broadcast",
            format!("a shape that broadcasts to {:?}", x.shape()),
            format!("{e:?}"),
        ));
    }
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let params = BroadcastParams { n: x.len() as u32, inner: e.len() as u32, alpha: 1.0, _pad: 0 };
    gpu.dispatch_1d(Kernel::AddBroadcast, &[x, e], &[&y], &params, x.len())?;
    Ok(y)
}

/// Tape op [`add_broadcast`]; backward `∂x = ∂y`, `∂e = Σ_lead ∂y` (summed over the axes
/// `e` was repeated along).
pub fn add_broadcast_var(tape: &mut Tape, x: &Var, e: &Var) -> Result<Var> {
    let y = add_broadcast(tape.gpu(), x.value(), e.value())?;
    let need = [x.requires_grad(), e.requires_grad()];
    let e_shape = e.shape().to_vec();
    Ok(tape.push(y, &[x, e], move |gpu, g| {
        let ge = need[1].then(|| sum::sum_rows(gpu, g, numel(&e_shape))?.reshape(&e_shape)).transpose()?;
        Ok(vec![need[0].then(|| g.clone()), ge])
    }))
}
