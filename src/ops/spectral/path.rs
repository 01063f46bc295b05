//! Which implementation runs a filter ([`FilterPath`]): the rows kernel on CPU adapters, the
//! tile kernel on GPUs, the fused kernels where the grid fits in workgroup memory, the
//! unfused path otherwise; and the fused kernels' channel tiles.

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::dct::{GridPlan, TokenLayout};
use crate::ops::spectral_tile;

/// Words of workgroup memory the fused kernels declare (`SMEM` in the shader).
const SMEM_WORDS: usize = 4096;
/// Invocations per workgroup of `moppa_fused` (`WG_FWD` in the shader).
const FWD_WG: usize = 64;
/// Invocations per workgroup of `moppa_fused_grad` (`WG_BWD` in the shader).
const BWD_WG: usize = 32;
/// Longest grid side of the fused kernels (`MAXL` in the shader).
const MAX_SIDE: usize = 32;

/// Largest grid side the CPU kernel (`spectral_rows.wgsl`) holds in registers.
pub const ROWS_MAX_GRID: usize = 16;

/// Whether the CPU kernel filters a `gh × gw` grid of `channels` channels.
pub fn rows_kernel_fits(gh: usize, gw: usize, channels: usize) -> bool {
    gh <= ROWS_MAX_GRID && gw <= ROWS_MAX_GRID && channels.is_multiple_of(4) && channels > 0
}

/// Which implementation of the filter to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FilterPath {
    /// On CPU adapters ([`crate::Gpu::cpu_kernels`]) the rows kernel when the grid fits it,
    /// on other adapters the tile kernel when it fits; otherwise fused when the grid fits in
    /// workgroup memory, unfused when it does not. `PEFT_WGPU_FILTER` (`rows`, `tile`, `fused`, `unfused`) overrides the
    /// choice, for benchmarking one path against another.
    #[default]
    Auto,
    /// `spectral_rows.wgsl`, laid out for CPU drivers: one lane per image and channel quad
    /// with the whole spectrum in registers; grids up to 16 × 16, channels a multiple of 4.
    Rows,
    /// `spectral_tile.wgsl`, laid out for GPUs: a workgroup per image and 16-channel tile,
    /// coalesced channel accesses; grids up to 16 × 16.
    Tile,
    /// The fused kernels; an error when the grid does not fit.
    Fused,
    /// `dct2_grid` → multiply → `dct3_grid`.
    Unfused,
}

/// Channel tiles of the fused kernels on one grid: channels per workgroup of the forward and
/// the backward kernel, `None` where that kernel cannot take the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedTiles {
    /// Channels per workgroup of `moppa_fused`.
    pub forward: Option<usize>,
    /// Channels per workgroup of `moppa_fused_grad` (it holds two grids).
    pub backward: Option<usize>,
}

/// The fused kernels' channel tiles on a `gh × gw` grid with `channels` channels. A tile is a
/// power of two, at least one quad of 4 channels, at most what the channels need; it must
/// fit beside the two DCT matrices in the kernels' workgroup memory, give each invocation one
/// quad of one line, and no side may exceed the kernels' line registers. A device offering
/// less workgroup memory than the kernels declare gets no fused path.
pub fn fused_tiles(gpu: &Gpu, gh: usize, gw: usize, channels: usize) -> FusedTiles {
    let device_words = gpu.limits().max_compute_workgroup_storage_size as usize / 4;
    let side = gh.max(gw);
    // Sides checked first, so the products below cannot overflow.
    if side > MAX_SIDE {
        return FusedTiles { forward: None, backward: None };
    }
    let (mats, cells) = (gh * gh + gw * gw, gh * gw);
    let usable = device_words >= SMEM_WORDS && mats < SMEM_WORDS && channels > 0;
    if !usable {
        return FusedTiles { forward: None, backward: None };
    }
    let tile = |grids: usize, wg: usize| {
        let most = ((SMEM_WORDS - mats) / (grids * cells)).min(4 * (wg / side));
        (most >= 4).then(|| (1usize << most.ilog2()).min(channels.next_power_of_two().max(4)))
    };
    FusedTiles { forward: tile(1, FWD_WG), backward: tile(2, BWD_WG) }
}

/// The implementation a filter on `plan` runs: `path` resolved against the device and grid
/// (`Auto` stays `Auto` where the choice is between fused and unfused, which depends on the
/// kernel), an error when a specific path was asked for and cannot take the grid.
pub(super) fn resolve(
    op: &'static str,
    gpu: &Gpu,
    plan: &GridPlan,
    l: &TokenLayout,
    path: FilterPath,
) -> Result<FilterPath> {
    let (gh, gw) = plan.grid();
    let rows = rows_kernel_fits(gh, gw, l.channels);
    let tile = spectral_tile::fits(gpu, gh, gw);
    let path = match path {
        FilterPath::Auto => env_path()?.unwrap_or(FilterPath::Auto),
        other => other,
    };
    match path {
        FilterPath::Auto => Ok(if gpu.cpu_kernels() && rows {
            FilterPath::Rows
        } else if tile {
            FilterPath::Tile
        } else {
            FilterPath::Auto
        }),
        FilterPath::Rows if !rows => {
            Err(Error::invalid(op, format!("a {gh}×{gw} grid of {} channels does not fit the rows kernel", l.channels)))
        }
        FilterPath::Tile if !tile => {
            Err(Error::invalid(op, format!("a {gh}×{gw} grid does not fit the tile kernel on this device")))
        }
        other => Ok(other),
    }
}

/// The path `PEFT_WGPU_FILTER` names, read once; `None` when unset, empty or `auto`, an
/// error naming the variable for any other value.
fn env_path() -> Result<Option<FilterPath>> {
    static PATH: OnceLock<std::result::Result<Option<FilterPath>, String>> = OnceLock::new();
    let choices = [
        ("rows", FilterPath::Rows),
        ("tile", FilterPath::Tile),
        ("fused", FilterPath::Fused),
        ("unfused", FilterPath::Unfused),
    ];
    crate::ops::env_choice(&PATH, "PEFT_WGPU_FILTER", &choices)
}

/// Whether the kernels specialised to 14×14 grids (one batch element per workgroup) apply.
pub(super) fn specialised(plan: &GridPlan, l: &TokenLayout) -> bool {
    plan.grid() == (14, 14) && l.batch <= u16::MAX as usize
}

/// The tile to use for `path` given the kernel's `tile`, `None` for the unfused path.
pub(super) fn pick(op: &'static str, plan: &GridPlan, tile: Option<usize>, path: FilterPath) -> Result<Option<usize>> {
    match path {
        FilterPath::Auto => Ok(tile),
        FilterPath::Unfused | FilterPath::Rows | FilterPath::Tile => Ok(None),
        FilterPath::Fused => tile.map(Some).ok_or_else(|| {
            let (gh, gw) = plan.grid();
            Error::invalid(op, format!("a {gh}×{gw} grid does not fit the fused kernel's workgroup memory"))
        }),
    }
}
