//! The MoPPA filter laid out for GPUs (`shaders/spectral_tile.wgsl`): one workgroup per
//! image and tile of 16 channels, the tile's grid in workgroup memory, adjacent threads on
//! adjacent channels so every global access is coalesced. Grids up to 16 × 16; 14 × 14 grids
//! (ViT-B/16 at 224 pixels) run a variant with the DCT matrix as a constant.
//!
//! Forward: `y = IDCT2(DCT2(x) ⊙ r)`. Backward: `∂x` is the same filter on `∂y` (the operator
//! is symmetric), `∂r = Σ_b DCT2(x) ⊙ DCT2(∂y)` from the kernel's spectrum mode and
//! `grid_mul_reduce`, the product-and-sum over the batch the other paths use.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::dct::{GridPlan, TokenLayout, scales};
use crate::ops::spectral;
use crate::tensor::{DType, Tensor};

/// Channels per workgroup (`TC` in the shader).
const TILE_CHANNELS: usize = 16;
/// Longest grid side (`LANES` in the shader).
pub const MAX_SIDE: usize = 16;
/// Workgroup memory the kernel declares, in bytes.
const WORKGROUP_BYTES: u32 = 4 * (4096 + 2 * 256);

/// Immediates of `shaders/spectral_tile.wgsl` (`TileParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TileParams {
    /// Images `B`.
    pub batch: u32,
    /// Tokens per image `T`.
    pub tokens: u32,
    /// Leading tokens outside the grid.
    pub prefix: u32,
    /// Grid height.
    pub gh: u32,
    /// Grid width.
    pub gw: u32,
    /// Channels `C`.
    pub channels: u32,
    /// 0: the filter; 1: the spectrum only.
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

/// Whether the tile kernel can filter a `gh × gw` grid on this device.
pub fn fits(gpu: &Gpu, gh: usize, gw: usize) -> bool {
    gh <= MAX_SIDE && gw <= MAX_SIDE && gpu.limits().max_compute_workgroup_storage_size >= WORKGROUP_BYTES
}

fn launch(gpu: &Gpu, plan: &GridPlan, x: &Tensor, r: Option<&Tensor>, out: &Tensor, mode: u32) -> Result<()> {
    let layout = plan.layout("spectral tile", x)?;
    let (gh, gw) = plan.grid();
    if !fits(gpu, gh, gw) {
        return Err(Error::invalid("grid", format!("{gh}×{gw} does not fit the tile kernel on this device")));
    }
    let ((s0h, sh), (s0w, sw)) = (scales(gh), scales(gw));
    let params = TileParams {
        batch: layout.batch as u32,
        tokens: layout.tokens as u32,
        prefix: layout.prefix as u32,
        gh: gh as u32,
        gw: gw as u32,
        channels: layout.channels as u32,
        mode,
        s0h,
        sh,
        s0w,
        sw,
    };
    // A lane copies every 14th (or 16th) prefix token; the grid's loops are fixed, about
    // 1,300 iterations on 16 × 16.
    let what = || format!("the MoPPA tile filter over {} prefix tokens", layout.prefix);
    gpu.check_loops(what, layout.prefix.div_ceil(14) + 2048)?;
    // The spectrum mode ignores r; bind x in its place.
    let r = r.unwrap_or(x);
    let tiles = layout.channels.div_ceil(TILE_CHANNELS) as u32;
    let groups = [tiles, layout.batch as u32, 1];
    if (gh, gw) == (14, 14) {
        return gpu.dispatch(Kernel::SpectralTile14, &[x, r], &[out], &params, groups);
    }
    gpu.dispatch(Kernel::SpectralTile, &[x, r, plan.tables()], &[out], &params, groups)
}

/// `IDCT2(DCT2(x) ⊙ r)` on the grid of tokens `x` `[B, T, C]` (prefix copied through), `r`
/// `[gh, gw, C]`.
pub fn filter(gpu: &Gpu, plan: &GridPlan, x: &Tensor, r: &Tensor) -> Result<Tensor> {
    let layout = plan.layout("spectral tile", x)?;
    let (gh, gw) = plan.grid();
    if r.shape() != [gh, gw, layout.channels] || r.dtype() != DType::F32 {
        return Err(Error::shape(
            "spectral tile",
            format!("r of shape [{gh}, {gw}, {}]", layout.channels),
            format!("{r:?}"),
        ));
    }
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    launch(gpu, plan, x, Some(r), &y, 0)?;
    Ok(y)
}

/// `DCT2(x_grid)` as `[B, gh·gw, C]`.
pub fn spectrum(gpu: &Gpu, plan: &GridPlan, x: &Tensor) -> Result<Tensor> {
    let layout = plan.layout("spectral tile", x)?;
    let (gh, gw) = plan.grid();
    let y = Tensor::uninit(gpu, &[layout.batch, gh * gw, layout.channels], DType::F32)?;
    launch(gpu, plan, x, None, &y, 1)?;
    Ok(y)
}

/// `(∂x, ∂r)` of [`filter`]: `∂x = filter(∂y, r)` (prefix gradients pass through),
/// `∂r = Σ_b DCT2(x) ⊙ DCT2(∂y)`.
pub fn filter_grads(gpu: &Gpu, plan: &GridPlan, x: &Tensor, r: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let dx = filter(gpu, plan, dy, r)?;
    let dr = grad_r(gpu, plan, x, dy)?;
    Ok((dx, dr))
}

/// `∂r = Σ_b DCT2(x) ⊙ DCT2(∂y)` as `[gh, gw, C]`.
pub fn grad_r(gpu: &Gpu, plan: &GridPlan, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if dy.shape() != x.shape() {
        return Err(Error::shape("spectral tile backward", format!("∂y of shape {:?}", x.shape()), format!("{dy:?}")));
    }
    let layout = plan.layout("spectral tile backward", x)?;
    let (gh, gw) = plan.grid();
    // The spectra are [B, gh·gw, C]: no prefix.
    let spectra = TokenLayout { tokens: gh * gw, prefix: 0, ..layout };
    spectral::mul_reduce_spectra(gpu, plan, &spectra, &spectrum(gpu, plan, x)?, &spectrum(gpu, plan, dy)?)
}
