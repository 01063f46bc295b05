//! General 2-D convolution as PyTorch's `F.conv2d` (`shaders/conv.wgsl`): any kernel size,
//! stride, zero padding and groups (dilation 1), forward and backward, direct form.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/conv.wgsl` (`ConvParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    /// Threads (output elements of the kernel).
    pub n: u32,
    /// Batch `B`.
    pub batch: u32,
    /// Input channels.
    pub cin: u32,
    /// Input height.
    pub height: u32,
    /// Input width.
    pub width: u32,
    /// Output channels.
    pub cout: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Zero rows added above and below.
    pub pad_h: u32,
    /// Zero columns added left and right.
    pub pad_w: u32,
    /// Groups.
    pub groups: u32,
    /// Batch positions `(b, oh, ow)` one thread of a gradient reduction adds.
    pub per_chunk: u32,
}

/// Stride, padding and groups of a convolution (dilation is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// `(vertical, horizontal)` stride, each ≥ 1.
    pub stride: (usize, usize),
    /// `(rows, columns)` of zeros added on each side.
    pub padding: (usize, usize),
    /// Groups; divides the input and output channels.
    pub groups: usize,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec { stride: (1, 1), padding: (0, 0), groups: 1 }
    }
}

impl Conv2dSpec {
    /// Stride 1, no padding, one group.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same stride on both axes.
    pub fn stride(self, s: usize) -> Self {
        Conv2dSpec { stride: (s, s), ..self }
    }

    /// The same padding on both axes.
    pub fn padding(self, p: usize) -> Self {
        Conv2dSpec { padding: (p, p), ..self }
    }

    /// `groups` groups.
    pub fn groups(self, groups: usize) -> Self {
        Conv2dSpec { groups, ..self }
    }

    /// Output side for an input side, kernel side, stride and padding:
    /// `⌊(size + 2·pad − kernel) / stride⌋ + 1`, `None` when the kernel does not fit, the
    /// stride is 0 or the padded size overflows.
    pub fn out_size(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
        let padded = pad.checked_mul(2)?.checked_add(size)?;
        padded.checked_sub(kernel)?.checked_div(stride)?.checked_add(1)
    }
}

/// Elements of a gradient partial-sum buffer beyond which its chunks grow longer.
const MAX_PARTIALS: usize = 1 << 22;
/// Batch positions per chunk when the buffer allows.
const POSITIONS_PER_CHUNK: usize = 64;

/// Fails when a thread of `op` looping over `channels` channels of a `w`'s kernel would run
/// past the adapter's loop limit ([`Gpu::check_loops`]): per channel, the kernel's rows, and
/// the columns of those that reach the thread's position. The forward reaches every row; the
/// input gradient, with a vertical `stride`, about one row in `stride` (two, for lanes of one
/// SIMD group on two rows).
fn check_kernel_loops(gpu: &Gpu, op: &'static str, channels: usize, w: &[usize], stride: usize) -> Result<()> {
    let (kh, kw) = (w[2], w[3]);
    let rows = if stride <= 1 { kh } else { kh.min(2 * kh.div_ceil(stride)) };
    let iterations = channels.saturating_mul(1 + 2 * kh + rows.saturating_mul(kw));
    gpu.check_loops(|| format!("{op} over {channels} channels of a {kh}×{kw} kernel"), iterations)
}

/// Checks `x` `[B, Cin, H, W]`, `w` `[Cout, Cin/G, KH, KW]` and `spec`; returns the params
/// (`n` and `per_chunk` left 0) and the output shape `[B, Cout, OH, OW]`.
fn plan(x: &[usize], w: &[usize], spec: Conv2dSpec) -> Result<(ConvParams, [usize; 4])> {
    let (&[b, cin, h, wd], &[cout, cpg, kh, kw]) = (x, w) else {
        return Err(Error::shape(
            "conv2d",
            "x [B, Cin, H, W] and w [Cout, Cin/groups, KH, KW]",
            format!("{x:?}, {w:?}"),
        ));
    };
    let g = spec.groups;
    let (sh, sw) = spec.stride;
    if g == 0 || sh == 0 || sw == 0 {
        return Err(Error::invalid("conv2d", format!("stride {:?} and groups {g} must be at least 1", spec.stride)));
    }
    if [b, cin, h, wd, cout, kh, kw].contains(&0) || cin % g != 0 || cout % g != 0 || cpg != cin / g {
        return Err(Error::shape(
            "conv2d",
            format!("non-empty x and w with Cin and Cout divisible by {g} and w [Cout, Cin/{g}, KH, KW]"),
            format!("x {x:?}, w {w:?}"),
        ));
    }
    let (Some(oh), Some(ow)) =
        (Conv2dSpec::out_size(h, kh, sh, spec.padding.0), Conv2dSpec::out_size(wd, kw, sw, spec.padding.1))
    else {
        return Err(Error::shape(
            "conv2d",
            format!("a {kh}×{kw} kernel within the padded {h}×{wd} input (padding {:?})", spec.padding),
            format!("x {x:?}, w {w:?}"),
        ));
    };
    let sizes = [[b, cin, h, wd], [b, cout, oh, ow], [cout, cpg, kh, kw]];
    let biggest = sizes.iter().map(|s| crate::tensor::checked_numel(s).unwrap_or(usize::MAX)).max().unwrap_or(0);
    let dims = [b, cin, h, wd, cout, oh, ow, kh, kw, sh, sw, spec.padding.0, spec.padding.1, g];
    if u32::try_from(biggest).is_err() || dims.iter().any(|&d| u32::try_from(d).is_err()) {
        return Err(Error::invalid("conv2d", format!("x {x:?}, w {w:?}: sizes exceed u32")));
    }
    let u = |v: usize| v as u32;
    let params = ConvParams {
        n: 0,
        batch: u(b),
        cin: u(cin),
        height: u(h),
        width: u(wd),
        cout: u(cout),
        out_h: u(oh),
        out_w: u(ow),
        kh: u(kh),
        kw: u(kw),
        stride_h: u(sh),
        stride_w: u(sw),
        pad_h: u(spec.padding.0),
        pad_w: u(spec.padding.1),
        groups: u(g),
        per_chunk: 0,
    };
    Ok((params, [b, cout, oh, ow]))
}

fn check_f32(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    match tensors.iter().find(|t| t.dtype() != DType::F32) {
        Some(t) => Err(Error::shape(op, "f32 tensors", format!("{t:?}"))),
        None => Ok(()),
    }
}

/// `y = conv2d(x, w) + b` as `torch.nn.functional.conv2d(x, w, b, stride, padding, 1, groups)`:
/// `y[b,o,oh,ow] = b[o] + Σ_{c,i,j} x[b, g·Cin/G + c, oh·sh − ph + i, ow·sw − pw + j]·w[o,c,i,j]`
/// with `g` the group of `o` and zeros outside the input. `x` `[B, Cin, H, W]`,
/// `w` `[Cout, Cin/G, KH, KW]`, `b` `[Cout]`; `y` `[B, Cout, OH, OW]`,
/// `OH = ⌊(H + 2ph − KH)/sh⌋ + 1`. One thread per output.
pub fn conv2d(gpu: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>, spec: Conv2dSpec) -> Result<Tensor> {
    let (mut params, out_shape) = plan(x.shape(), w.shape(), spec)?;
    check_kernel_loops(gpu, "conv2d", w.shape()[1], w.shape(), 1)?;
    check_f32("conv2d", &[x, w])?;
    let zeros;
    let bias = match b {
        Some(b) if b.shape() == [out_shape[1]] && b.dtype() == DType::F32 => b,
        Some(b) => return Err(Error::shape("conv2d bias", format!("f32 [{}]", out_shape[1]), format!("{b:?}"))),
        None => {
            zeros = Tensor::zeros(gpu, &[out_shape[1]])?;
            &zeros
        }
    };
    let y = Tensor::uninit(gpu, &out_shape, DType::F32)?;
    params.n = y.len() as u32;
    gpu.dispatch_1d(Kernel::Conv2d, &[x, w, bias], &[&y], &params, y.len())?;
    Ok(y)
}

/// `∂x` of [`conv2d`] for `∂y` `[B, Cout, OH, OW]`: the transposed convolution
/// `∂x[b,ci,ih,iw] = Σ ∂y[b,o,oh,ow]·w[o, ci mod Cin/G, i, j]` over the outputs `o` of `ci`'s
/// group and the `(i, j, oh, ow)` with `oh·sh − ph + i = ih`, `ow·sw − pw + j = iw`.
/// One thread per input element.
pub fn conv2d_grad_input(gpu: &Gpu, dy: &Tensor, w: &Tensor, x_shape: &[usize], spec: Conv2dSpec) -> Result<Tensor> {
    let (mut params, out_shape) = plan(x_shape, w.shape(), spec)?;
    check_f32("conv2d_grad_input", &[dy, w])?;
    check_kernel_loops(gpu, "conv2d_grad_input", w.shape()[0] / spec.groups, w.shape(), spec.stride.0)?;
    if dy.shape() != out_shape {
        return Err(Error::shape("conv2d_grad_input", format!("∂y {out_shape:?}"), format!("{dy:?}")));
    }
    let dx = Tensor::uninit(gpu, x_shape, DType::F32)?;
    params.n = dx.len() as u32;
    gpu.dispatch_1d(Kernel::Conv2dGradInput, &[dy, w], &[&dx], &params, dx.len())?;
    Ok(dx)
}

/// Chunks over the `B·OH·OW` batch positions for a reduction into `outputs` values: about
/// 64 positions each, fewer chunks when the partial sums would exceed `MAX_PARTIALS`.
fn chunking(positions: usize, outputs: usize) -> (usize, usize) {
    let chunks = positions.div_ceil(POSITIONS_PER_CHUNK).min((MAX_PARTIALS / outputs).max(1)).max(1);
    let per_chunk = positions.div_ceil(chunks);
    (positions.div_ceil(per_chunk), per_chunk)
}

/// `∂w` of [`conv2d`]: `∂w[o,c,i,j] = Σ_{b,oh,ow} ∂y[b,o,oh,ow]·x[b, g·Cin/G + c, ih, iw]`.
/// One thread per (weight, chunk of batch positions) writes a partial sum; the chunks are
/// then added by [`sum::sum_rows`].
pub fn conv2d_grad_weight(gpu: &Gpu, dy: &Tensor, x: &Tensor, w_shape: &[usize], spec: Conv2dSpec) -> Result<Tensor> {
    let (mut params, out_shape) = plan(x.shape(), w_shape, spec)?;
    check_f32("conv2d_grad_weight", &[dy, x])?;
    if dy.shape() != out_shape {
        return Err(Error::shape("conv2d_grad_weight", format!("∂y {out_shape:?}"), format!("{dy:?}")));
    }
    let weights: usize = w_shape.iter().product();
    let (chunks, per_chunk) = chunking(out_shape[0] * out_shape[2] * out_shape[3], weights);
    let partials = Tensor::uninit(gpu, &[chunks, weights], DType::F32)?;
    params.n = u32::try_from(partials.len())
        .map_err(|_| Error::invalid("conv2d_grad_weight", format!("{} partial sums exceed u32", partials.len())))?;
    params.per_chunk = per_chunk as u32;
    gpu.check_loops(|| format!("conv2d_grad_weight over {per_chunk} batch positions a chunk"), per_chunk)?;
    gpu.dispatch_1d(Kernel::Conv2dGradWeight, &[dy, x], &[&partials], &params, partials.len())?;
    sum::sum_rows(gpu, &partials, weights)?.reshape(w_shape)
}

/// `∂b` of [`conv2d`]: `∂b[o] = Σ_{b,oh,ow} ∂y[b,o,oh,ow]`, by chunks of batch positions and
/// then [`sum::sum_rows`].
pub fn conv2d_grad_bias(gpu: &Gpu, dy: &Tensor) -> Result<Tensor> {
    let &[b, cout, oh, ow] = dy.shape() else {
        return Err(Error::shape("conv2d_grad_bias", "∂y [B, Cout, OH, OW]", format!("{dy:?}")));
    };
    check_f32("conv2d_grad_bias", &[dy])?;
    if dy.is_empty() || u32::try_from(dy.len()).is_err() {
        return Err(Error::shape("conv2d_grad_bias", "a non-empty ∂y within u32 elements", format!("{dy:?}")));
    }
    let (chunks, per_chunk) = chunking(b * oh * ow, cout);
    let partials = Tensor::uninit(gpu, &[chunks, cout], DType::F32)?;
    let u = |v: usize| v as u32;
    let params = ConvParams {
        n: u(partials.len()),
        batch: u(b),
        cout: u(cout),
        out_h: u(oh),
        out_w: u(ow),
        per_chunk: u(per_chunk),
        ..Default::default()
    };
    gpu.dispatch_1d(Kernel::Conv2dGradBias, &[dy], &[&partials], &params, partials.len())?;
    sum::sum_rows(gpu, &partials, cout)
}

/// Tape op [`conv2d`].
///
/// Backward: `∂x = conv2d_grad_input(∂y, w)`, `∂w = conv2d_grad_weight(∂y, x)`,
/// `∂b = conv2d_grad_bias(∂y)`. `w` is saved only when `x` needs a gradient and `x` only
/// when `w` does, so a frozen weight never keeps its input alive.
pub fn conv2d_var(tape: &mut Tape, x: &Var, w: &Var, b: Option<&Var>, spec: Conv2dSpec) -> Result<Var> {
    let y = conv2d(tape.gpu(), x.value(), w.value(), b.map(Var::value), spec)?;
    let for_x = x.requires_grad().then(|| (w.value().clone(), x.shape().to_vec()));
    let for_w = w.requires_grad().then(|| (x.value().clone(), w.shape().to_vec()));
    let bias_grad = b.map(Var::requires_grad);
    let mut parents = vec![x, w];
    parents.extend(b);
    Ok(tape.push(y, &parents, move |gpu, g| {
        let gx = for_x.map(|(w, shape)| conv2d_grad_input(gpu, g, &w, &shape, spec)).transpose()?;
        let gw = for_w.map(|(x, shape)| conv2d_grad_weight(gpu, g, &x, &shape, spec)).transpose()?;
        let mut grads = vec![gx, gw];
        if let Some(need) = bias_grad {
            grads.push(need.then(|| conv2d_grad_bias(gpu, g)).transpose()?);
        }
        Ok(grads)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_position_once_and_bound_the_partials() {
        for positions in [1, 2, 63, 64, 65, 360, 12_544, 1 << 20] {
            for outputs in [1, 7, 4096, 1 << 16, 1 << 22, 1 << 23] {
                let (chunks, per_chunk) = chunking(positions, outputs);
                assert!(chunks >= 1 && per_chunk >= 1);
                assert!(chunks * per_chunk >= positions, "{positions} positions, {outputs} outputs: uncovered");
                assert!((chunks - 1) * per_chunk < positions, "{positions} positions, {outputs} outputs: empty chunk");
                assert!(chunks * outputs <= MAX_PARTIALS.max(outputs), "{positions}, {outputs}: too many partials");
                assert!(per_chunk <= POSITIONS_PER_CHUNK || chunks * outputs * 2 > MAX_PARTIALS);
            }
        }
    }
}
