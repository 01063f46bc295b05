//! The MoPPA spectral filter (`shaders/spectral.wgsl`), SPEC §3.
//!
//! On tokens `x` `[B, T, C]` whose last `gh·gw` tokens form the grid, per channel,
//!
//! ```text
//! y = IDCT2( DCT2(x_grid) ⊙ r ),        r: [gh, gw, C];  prefix tokens copied through
//! ```
//!
//! The operator `K = C_hᵀ⊗C_wᵀ · diag(r) · C_h⊗C_w` is symmetric, so `∂x` is the same filter
//! applied to `∂y` (prefix gradients pass through), and `∂r = Σ_batch DCT2(x) ⊙ DCT2(∂y)`.
//!
//! The fused kernels keep a channel tile's grid in workgroup memory and do
//! DCT2 → ⊙r → IDCT2 (and the backward) in one pass over the data; grids too large for
//! workgroup memory take the unfused path (`dct2_grid` → multiply → `dct3_grid`), which also
//! serves as the cross-check in tests.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::dct::{self, GridPlan, TokenLayout, scales};
use crate::tensor::{DType, Tensor};

/// Words of workgroup memory the fused kernels declare (`SMEM` in the shader).
const SMEM_WORDS: usize = 4096;
/// Threads per workgroup of the fused kernels.
const FUSED_WG: usize = 256;

/// Immediates of `moppa_fused` / `moppa_fused_grad` (`FusedParams` in `shaders/spectral.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FusedParams {
    /// Batch size `B`.
    pub batch: u32,
    /// Tokens per example `T`.
    pub tokens: u32,
    /// Leading tokens copied through.
    pub prefix: u32,
    /// Grid height.
    pub gh: u32,
    /// Grid width.
    pub gw: u32,
    /// Channels `C`.
    pub channels: u32,
    /// Channels per workgroup tile.
    pub ct: u32,
    /// Batch elements per workgroup in the backward kernel.
    pub per_chunk: u32,
    /// Backward: 1 to write `∂x`, 0 for `∂r` only.
    pub want_dx: u32,
    /// `√(1/gh)`.
    pub s0h: f32,
    /// `√(2/gh)`.
    pub sh: f32,
    /// `√(1/gw)`.
    pub s0w: f32,
    /// `√(2/gw)`.
    pub sw: f32,
}

/// Immediates of `grid_scale`, `grid_mul_reduce`, `sum_chunks` (`GridOpParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GridOpParams {
    /// Batch size (`sum_chunks`: number of chunks).
    pub batch: u32,
    /// Tokens per example.
    pub tokens: u32,
    /// Leading tokens copied through.
    pub prefix: u32,
    /// Grid cells `gh·gw`.
    pub grid: u32,
    /// Channels.
    pub channels: u32,
    /// Threads.
    pub total: u32,
}

/// Immediates of `shaders/spectral_rows.wgsl` (`SpectralRowsParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SpectralRowsParams {
    /// Batch size `B`.
    pub batch: u32,
    /// Tokens per example `T`.
    pub tokens: u32,
    /// Leading tokens copied through.
    pub prefix: u32,
    /// Grid height.
    pub gh: u32,
    /// Grid width.
    pub gw: u32,
    /// Channels / 4.
    pub c4: u32,
    /// 0: the filter; 1: the spectrum `DCT2(x)` only.
    pub mode: u32,
    /// `√(1/gh)`.
    pub s0h: f32,
    /// `√(2/gh)`.
    pub sh: f32,
    /// `√(1/gw)`.
    pub s0w: f32,
    /// `√(2/gw)`.
    pub sw: f32,
}

/// Largest grid side the CPU kernel (`spectral_rows.wgsl`) holds in registers.
pub const ROWS_MAX_GRID: usize = 16;

/// Whether the CPU kernel filters a `gh × gw` grid of `channels` channels.
pub fn rows_kernel_fits(gh: usize, gw: usize, channels: usize) -> bool {
    gh <= ROWS_MAX_GRID && gw <= ROWS_MAX_GRID && channels.is_multiple_of(4) && channels > 0
}

/// Which implementation of the filter to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FilterPath {
    /// On CPU adapters the rows kernel when the grid fits it; otherwise fused when the grid
    /// fits in workgroup memory, unfused when it does not.
    #[default]
    Auto,
    /// `spectral_rows.wgsl`, laid out for CPU drivers: one lane per image and channel quad
    /// with the whole spectrum in registers; grids up to 16 × 16, channels a multiple of 4.
    Rows,
    /// The fused kernels; an error when the grid does not fit.
    Fused,
    /// `dct2_grid` → multiply → `dct3_grid`.
    Unfused,
}

/// Channels per workgroup of the fused kernels on a `gh × gw` grid with `channels` channels,
/// or `None` when one channel's grid and the two DCT matrices do not fit in workgroup memory
/// (or the device offers less than the kernels declare).
pub fn fused_tile(gpu: &Gpu, gh: usize, gw: usize, channels: usize) -> Option<usize> {
    let device_words = gpu.limits().max_compute_workgroup_storage_size as usize / 4;
    let mats = gh * gh + gw * gw;
    let cells = gh * gw;
    if device_words < SMEM_WORDS || mats + 2 * cells > SMEM_WORDS || channels == 0 {
        return None;
    }
    let cap = (SMEM_WORDS - mats) / (2 * cells);
    // A power of two keeps tiles aligned to the channel axis; at most the channels there are.
    Some((1usize << cap.ilog2()).min(channels))
}

fn check_r(op: &'static str, plan: &GridPlan, l: &TokenLayout, r: &Tensor) -> Result<()> {
    let (gh, gw) = plan.grid();
    if r.shape() != [gh, gw, l.channels] || r.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("f32 r [{gh}, {gw}, {}]", l.channels), format!("{r:?}")));
    }
    Ok(())
}

fn fused_params(plan: &GridPlan, l: &TokenLayout, ct: usize) -> FusedParams {
    let (gh, gw) = plan.grid();
    let ((s0h, sh), (s0w, sw)) = (scales(gh), scales(gw));
    FusedParams {
        batch: l.batch as u32,
        tokens: l.tokens as u32,
        prefix: l.prefix as u32,
        gh: gh as u32,
        gw: gw as u32,
        channels: l.channels as u32,
        ct: ct as u32,
        per_chunk: 1,
        want_dx: 1,
        s0h,
        sh,
        s0w,
        sw,
    }
}

fn grid_op_params(plan: &GridPlan, l: &TokenLayout, total: usize) -> GridOpParams {
    let (gh, gw) = plan.grid();
    GridOpParams {
        batch: l.batch as u32,
        tokens: l.tokens as u32,
        prefix: l.prefix as u32,
        grid: (gh * gw) as u32,
        channels: l.channels as u32,
        total: total as u32,
    }
}

/// Whether `path` runs the rows kernel (an error when it was asked for and cannot).
fn use_rows(op: &'static str, gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, path: FilterPath) -> Result<bool> {
    let (gh, gw) = plan.grid();
    let fits = rows_kernel_fits(gh, gw, l.channels);
    match path {
        FilterPath::Auto => Ok(fits && gpu.adapter_info().device_type == wgpu::DeviceType::Cpu),
        FilterPath::Rows if fits => Ok(true),
        FilterPath::Rows => {
            Err(Error::invalid(op, format!("a {gh}×{gw} grid of {} channels does not fit the rows kernel", l.channels)))
        }
        _ => Ok(false),
    }
}

/// The rows kernel on `x`: the filter with `r` (`mode` 0) or the spectrum (`mode` 1).
fn rows_pass(gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, x: &Tensor, r: Option<&Tensor>) -> Result<Tensor> {
    let (gh, gw) = plan.grid();
    let ((s0h, sh), (s0w, sw)) = (scales(gh), scales(gw));
    let params = SpectralRowsParams {
        batch: l.batch as u32,
        tokens: l.tokens as u32,
        prefix: l.prefix as u32,
        gh: gh as u32,
        gw: gw as u32,
        c4: (l.channels / 4) as u32,
        mode: u32::from(r.is_none()),
        s0h,
        sh,
        s0w,
        sw,
    };
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let groups = [(l.channels / 4).div_ceil(8) as u32, l.batch as u32, 1];
    let kernel = if (gh, gw) == (14, 14) { Kernel::MoppaRows14 } else { Kernel::MoppaRows };
    gpu.dispatch(kernel, &[x, r.unwrap_or(x), plan.tables()], &[&y], &params, groups)?;
    Ok(y)
}

/// The tile to use for `path`, `None` for the unfused path.
fn pick(op: &'static str, gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, path: FilterPath) -> Result<Option<usize>> {
    let (gh, gw) = plan.grid();
    let tile = fused_tile(gpu, gh, gw, l.channels);
    match path {
        FilterPath::Auto => Ok(tile),
        FilterPath::Unfused | FilterPath::Rows => Ok(None),
        FilterPath::Fused => tile.map(Some).ok_or_else(|| {
            Error::invalid(op, format!("a {gh}×{gw} grid does not fit the fused kernel's workgroup memory"))
        }),
    }
}

/// The MoPPA filter `y = IDCT2(DCT2(x_grid) ⊙ r)` per channel, prefix tokens copied; `x` is
/// `[B, T, C]` or `[B, gh, gw, C]`, `r` is `[gh, gw, C]`. Fused when the grid fits.
pub fn moppa_filter(gpu: &Gpu, plan: &GridPlan, x: &Tensor, r: &Tensor) -> Result<Tensor> {
    moppa_filter_with(gpu, plan, x, r, FilterPath::Auto)
}

/// [`moppa_filter`] on the chosen implementation.
pub fn moppa_filter_with(gpu: &Gpu, plan: &GridPlan, x: &Tensor, r: &Tensor, path: FilterPath) -> Result<Tensor> {
    let op = "moppa_filter";
    let l = plan.layout(op, x)?;
    check_r(op, plan, &l, r)?;
    if use_rows(op, gpu, plan, &l, path)? {
        return rows_pass(gpu, plan, &l, x, Some(r));
    }
    let Some(ct) = pick(op, gpu, plan, &l, path)? else {
        let spectrum = dct::dct2_grid(gpu, plan, x)?;
        let scaled = Tensor::uninit(gpu, x.shape(), DType::F32)?;
        let params = grid_op_params(plan, &l, x.len());
        gpu.dispatch_1d(Kernel::GridScale, &[&spectrum, r], &[&scaled], &params, x.len())?;
        return dct::dct3_grid(gpu, plan, &scaled);
    };
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let groups = [l.channels.div_ceil(ct) as u32, l.batch as u32, 1];
    gpu.dispatch(Kernel::MoppaFused, &[x, r, plan.tables()], &[&y], &fused_params(plan, &l, ct), groups)?;
    Ok(y)
}

/// Gradients of the filter given `∂y`: `(∂x, ∂r)` with `∂x = moppa_filter(∂y, r)` (only when
/// `r` is given) and `∂r = Σ_batch DCT2(x) ⊙ DCT2(∂y)` `[gh, gw, C]`.
pub fn moppa_filter_grads(
    gpu: &Gpu,
    plan: &GridPlan,
    x: &Tensor,
    r: Option<&Tensor>,
    dy: &Tensor,
    path: FilterPath,
) -> Result<(Option<Tensor>, Tensor)> {
    let op = "moppa_filter_grads";
    let l = plan.layout(op, x)?;
    if dy.shape() != x.shape() || dy.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("∂y like x {x:?}"), format!("{dy:?}")));
    }
    if let Some(r) = r {
        check_r(op, plan, &l, r)?;
    }
    let (gh, gw) = plan.grid();
    let dr_len = gh * gw * l.channels;
    if use_rows(op, gpu, plan, &l, path)? {
        let dx = r.map(|r| rows_pass(gpu, plan, &l, dy, Some(r))).transpose()?;
        let (sx, sg) = (rows_pass(gpu, plan, &l, x, None)?, rows_pass(gpu, plan, &l, dy, None)?);
        let dr = Tensor::uninit(gpu, &[gh, gw, l.channels], DType::F32)?;
        let params = grid_op_params(plan, &l, dr_len);
        gpu.dispatch_1d(Kernel::GridMulReduce, &[&sx, &sg], &[&dr], &params, dr_len)?;
        return Ok((dx, dr));
    }
    let Some(ct) = pick(op, gpu, plan, &l, path)? else {
        let dx = r.map(|r| moppa_filter_with(gpu, plan, dy, r, FilterPath::Unfused)).transpose()?;
        let (sx, sg) = (dct::dct2_grid(gpu, plan, x)?, dct::dct2_grid(gpu, plan, dy)?);
        let dr = Tensor::uninit(gpu, &[gh, gw, l.channels], DType::F32)?;
        let params = grid_op_params(plan, &l, dr_len);
        gpu.dispatch_1d(Kernel::GridMulReduce, &[&sx, &sg], &[&dr], &params, dr_len)?;
        return Ok((dx, dr));
    };
    // Split the batch so that tiles × chunks gives a few hundred workgroups.
    let tiles = l.channels.div_ceil(ct);
    let per_chunk = l.batch.div_ceil(FUSED_WG.div_ceil(tiles).clamp(1, l.batch.max(1)));
    let chunks = l.batch.div_ceil(per_chunk.max(1)).max(1);
    let mut params = fused_params(plan, &l, ct);
    params.per_chunk = per_chunk.max(1) as u32;
    params.want_dx = u32::from(r.is_some());
    let (dx, r_bind) = match r {
        Some(r) => (Tensor::uninit(gpu, x.shape(), DType::F32)?, r),
        None => (Tensor::uninit(gpu, &[1], DType::F32)?, x),
    };
    let part = Tensor::uninit(gpu, &[chunks, gh, gw, l.channels], DType::F32)?;
    let groups = [tiles as u32, chunks as u32, 1];
    gpu.dispatch(Kernel::MoppaFusedGrad, &[x, dy, r_bind, plan.tables()], &[&dx, &part], &params, groups)?;
    let dr = if chunks == 1 {
        part.reshape(&[gh, gw, l.channels])?
    } else {
        let dr = Tensor::uninit(gpu, &[gh, gw, l.channels], DType::F32)?;
        let sum = GridOpParams { batch: chunks as u32, total: dr_len as u32, ..Default::default() };
        gpu.dispatch_1d(Kernel::SumChunks, &[&part], &[&dr], &sum, dr_len)?;
        dr
    };
    Ok((r.is_some().then_some(dx), dr))
}

/// [`moppa_filter`] on the tape. Backward: `∂x = moppa_filter(∂y, r)` (saves `r`, only when
/// `x` needs a gradient) and `∂r = Σ_batch DCT2(x) ⊙ DCT2(∂y)` (saves `x`, only when `r`
/// needs one); both come from one fused kernel when both are wanted.
pub fn moppa_filter_var(tape: &mut Tape, plan: &GridPlan, x: &Var, r: &Var) -> Result<Var> {
    let y = moppa_filter(tape.gpu(), plan, x.value(), r.value())?;
    let plan = plan.clone();
    let saved_x = r.requires_grad().then(|| x.value().clone());
    let saved_r = x.requires_grad().then(|| r.value().clone());
    Ok(tape.push(y, &[x, r], move |gpu, g| match (saved_x, saved_r) {
        (Some(x), r) => {
            let (dx, dr) = moppa_filter_grads(gpu, &plan, &x, r.as_ref(), g, FilterPath::Auto)?;
            Ok(vec![dx, Some(dr)])
        }
        (None, Some(r)) => Ok(vec![Some(moppa_filter(gpu, &plan, g, &r)?), None]),
        (None, None) => Ok(vec![None, None]),
    }))
}
