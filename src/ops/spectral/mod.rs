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
//! DCT2 → ⊙r → IDCT2 (and the backward) in one pass over the data; 14×14 grids (ViT-B/16 at
//! 224 px, the common case) get kernels specialised to that size (`shaders/spectral14.wgsl`).
//! Grids too large for workgroup memory take the unfused path (`dct2_grid` → multiply →
//! `dct3_grid`), which also serves as the cross-check in tests. [`FilterPath`] picks a path
//! explicitly.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, LOOP_BUDGET};
use crate::ops::dct::{self, GridPlan, TokenLayout, scales};
use crate::ops::spectral_tile;
use crate::tensor::{DType, Tensor};

mod path;

pub use path::{FilterPath, FusedTiles, ROWS_MAX_GRID, fused_tiles, rows_kernel_fits};
use path::{pick, resolve, specialised};

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

/// Immediates of `grid_scale`, `grid_mul_reduce`, `sum_chunks` (`GridOpParams` in
/// `shaders/spectral_grid.wgsl`).
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

/// Batch elements per workgroup of the fused kernels: enough chunks that tiles × chunks is a
/// few hundred workgroups, each chunk as long as possible so the matrices and `r` load once
/// per chunk, but on an adapter that stops long loops ([`Gpu::loop_limit`]) no longer than
/// [`LOOP_BUDGET`] iterations of [`fused_loops_per_image`] (a 1 × 32 grid's backward ran past
/// lavapipe's limit from 63 images a chunk and dropped the rest).
/// Fails ([`Gpu::check_loops`]) when not even one image fits an invocation's loops.
fn per_chunk(gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, (tiles, ct): (usize, usize)) -> Result<(usize, usize)> {
    let batch = l.batch.max(1);
    let chunks = 512usize.div_ceil(tiles).clamp(1, batch);
    let mut per = batch.div_ceil(chunks).max(1);
    if gpu.loop_limit().is_some() {
        let per_image = check_fused_loops(gpu, plan, l, ct)?;
        per = per.min((LOOP_BUDGET / per_image).max(1));
    }
    Ok((per, batch.div_ceil(per)))
}

/// [`fused_loops_per_image`], after checking that one image (with the kernel's fixed loops:
/// tables, `r`, ∂r) fits an invocation's loops; the 14 × 14 kernels take one image each.
fn check_fused_loops(gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, ct: usize) -> Result<usize> {
    let per_image = fused_loops_per_image(plan, l, ct);
    let what = || format!("the fused MoPPA filter of {} prefix tokens and {} channels a tile", l.prefix, ct);
    gpu.check_loops(what, per_image + 256)?;
    Ok(per_image)
}

/// Loop iterations an invocation of `moppa_fused` or `moppa_fused_grad` runs per image of its
/// chunk, at most (the backward's, the longer): its share of the prefix tokens, a pass over
/// the grid's rows and columns, and the triangular DCT loops over each side.
fn fused_loops_per_image(plan: &GridPlan, l: &TokenLayout, ct: usize) -> usize {
    let (gh, gw) = plan.grid();
    let triangle = |n: usize| n.div_ceil(4) * (n + 1);
    1 + (l.prefix * ct).div_ceil(32) + 10 * gw + 4 * gh + 3 * triangle(gw) + 3 * triangle(gh)
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

/// `∂r[cell, c] = Σ_b sx[b, P + cell, c] · sg[b, P + cell, c]` `[gh, gw, C]`: the product of
/// two spectra laid out as `l`, summed over the batch (`grid_mul_reduce`).
pub(crate) fn mul_reduce_spectra(
    gpu: &Gpu,
    plan: &GridPlan,
    l: &TokenLayout,
    sx: &Tensor,
    sg: &Tensor,
) -> Result<Tensor> {
    let (gh, gw) = plan.grid();
    let len = gh * gw * l.channels;
    // An invocation sums its cell over the batch.
    gpu.check_loops(|| format!("the MoPPA filter's ∂r over a batch of {}", l.batch), l.batch)?;
    let dr = Tensor::uninit(gpu, &[gh, gw, l.channels], DType::F32)?;
    gpu.dispatch_1d(Kernel::GridMulReduce, &[sx, sg], &[&dr], &grid_op_params(plan, l, len), len)?;
    Ok(dr)
}

/// The rows kernel on `x`: the filter with `r` (`mode` 0) or the spectrum (`mode` 1).
fn rows_pass(gpu: &Gpu, plan: &GridPlan, l: &TokenLayout, x: &Tensor, r: Option<&Tensor>) -> Result<Tensor> {
    let (gh, gw) = plan.grid();
    // An invocation copies every prefix token, then passes over the grid's rows twice.
    gpu.check_loops(|| format!("the MoPPA filter over {} prefix tokens", l.prefix), l.prefix + 2 * gh + 8)?;
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
    let path = resolve(op, gpu, plan, &l, path)?;
    match path {
        FilterPath::Rows => return rows_pass(gpu, plan, &l, x, Some(r)),
        FilterPath::Tile => return spectral_tile::filter(gpu, plan, x, r),
        _ => {}
    }
    let (gh, gw) = plan.grid();
    let tile = fused_tiles(gpu, gh, gw, l.channels).forward;
    let Some(ct) = pick(op, plan, tile, path)? else {
        let spectrum = dct::dct2_grid(gpu, plan, x)?;
        let scaled = Tensor::uninit(gpu, x.shape(), DType::F32)?;
        let params = grid_op_params(plan, &l, x.len());
        gpu.dispatch_1d(Kernel::GridScale, &[&spectrum, r], &[&scaled], &params, x.len())?;
        return dct::dct3_grid(gpu, plan, &scaled);
    };
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let tiles = l.channels.div_ceil(ct);
    let (kernel, (per, chunks)) = if specialised(plan, &l) {
        check_fused_loops(gpu, plan, &l, ct)?;
        (Kernel::MoppaFused14, (1, l.batch))
    } else {
        (Kernel::MoppaFused, per_chunk(gpu, plan, &l, (tiles, ct))?)
    };
    let params = FusedParams { per_chunk: per as u32, ..fused_params(plan, &l, ct) };
    gpu.dispatch(kernel, &[x, r, plan.tables()], &[&y], &params, [tiles as u32, chunks as u32, 1])?;
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
    if l.batch == 0 {
        let dx = r.map(|_| Tensor::zeros(gpu, x.shape())).transpose()?;
        return Ok((dx, Tensor::zeros(gpu, &[gh, gw, l.channels])?));
    }
    let path = resolve(op, gpu, plan, &l, path)?;
    if path == FilterPath::Tile {
        let dx = r.map(|r| spectral_tile::filter(gpu, plan, dy, r)).transpose()?;
        return Ok((dx, spectral_tile::grad_r(gpu, plan, x, dy)?));
    }
    if path == FilterPath::Rows {
        let dx = r.map(|r| rows_pass(gpu, plan, &l, dy, Some(r))).transpose()?;
        let (sx, sg) = (rows_pass(gpu, plan, &l, x, None)?, rows_pass(gpu, plan, &l, dy, None)?);
        return Ok((dx, mul_reduce_spectra(gpu, plan, &l, &sx, &sg)?));
    }
    let tile = fused_tiles(gpu, gh, gw, l.channels).backward;
    let Some(ct) = pick(op, plan, tile, path)? else {
        let dx = r.map(|r| moppa_filter_with(gpu, plan, dy, r, FilterPath::Unfused)).transpose()?;
        let (sx, sg) = (dct::dct2_grid(gpu, plan, x)?, dct::dct2_grid(gpu, plan, dy)?);
        return Ok((dx, mul_reduce_spectra(gpu, plan, &l, &sx, &sg)?));
    };
    let tiles = l.channels.div_ceil(ct);
    let (kernel, (per, chunks)) = if specialised(plan, &l) {
        check_fused_loops(gpu, plan, &l, ct)?;
        (Kernel::MoppaFusedGrad14, (1, l.batch))
    } else {
        (Kernel::MoppaFusedGrad, per_chunk(gpu, plan, &l, (tiles, ct))?)
    };
    let params = FusedParams { per_chunk: per as u32, want_dx: u32::from(r.is_some()), ..fused_params(plan, &l, ct) };
    let (dx, r_bind) = match r {
        Some(r) => (Tensor::uninit(gpu, x.shape(), DType::F32)?, r),
        None => (Tensor::uninit(gpu, &[1], DType::F32)?, x),
    };
    let part = Tensor::uninit(gpu, &[chunks, gh, gw, l.channels], DType::F32)?;
    let groups = [tiles as u32, chunks as u32, 1];
    gpu.dispatch(kernel, &[x, dy, r_bind, plan.tables()], &[&dx, &part], &params, groups)?;
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
