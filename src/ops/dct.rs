//! Orthonormal DCT-II and DCT-III (`shaders/dct.wgsl`), SPEC §2.
//!
//! `X[k] = s_k Σ_n x[n] cos(π (n + ½) k / N)` with `s_0 = √(1/N)`, `s_k = √(2/N)`: the matrix
//! `C` is orthogonal, the inverse (DCT-III) is `Cᵀ`, and the backward pass of each transform
//! is the other one. The kernels evaluate no cosine: a [`DctPlan`] or [`GridPlan`] holds the
//! table `cos(π m / (2N))`, `m < 4N`, computed once on the host in f64, and the kernels index
//! it with the exact integer `(2n+1)·k mod 4N`. Make plans once (per layer or model) and reuse
//! them; nothing is allocated for them in a training step.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, WG_1D};
use crate::tensor::{DType, Tensor};

/// Longest transform length: `(2N−1)(N−1)` must fit the kernels' u32 angle index.
pub const MAX_LEN: usize = 32768;

/// Immediates of `dct2_rows` / `dct3_rows` (`DctParams` in `shaders/dct.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DctParams {
    /// Number of rows.
    pub rows: u32,
    /// Transform length `N`.
    pub n: u32,
    /// Workgroups per row, `⌈N / 256⌉`.
    pub blocks: u32,
    /// `√(1/N)`.
    pub s0: f32,
    /// `√(2/N)`.
    pub s: f32,
}

/// Immediates of `dct2_grid_axis` / `dct3_grid_axis` (`GridParams` in `shaders/dct.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GridParams {
    /// Batch size `B`.
    pub batch: u32,
    /// Tokens per example `T` (prefix + grid).
    pub tokens: u32,
    /// Leading tokens copied through.
    pub prefix: u32,
    /// Grid height.
    pub gh: u32,
    /// Grid width.
    pub gw: u32,
    /// Channels `C`.
    pub channels: u32,
    /// 0: transform along h (grid columns); 1: along w (grid rows).
    pub axis: u32,
    /// `B·T·C`, the number of threads.
    pub total: u32,
    /// `√(1/gh)`.
    pub s0h: f32,
    /// `√(2/gh)`.
    pub sh: f32,
    /// `√(1/gw)`.
    pub s0w: f32,
    /// `√(2/gw)`.
    pub sw: f32,
}

/// `cos(π m / (2N))` for `m` in `0..4N`, evaluated in f64 and rounded once.
pub(crate) fn cos_table(n: usize) -> Vec<f32> {
    (0..4 * n).map(|m| (std::f64::consts::PI * m as f64 / (2 * n) as f64).cos() as f32).collect()
}

/// The scales `(s_0, s_k) = (√(1/N), √(2/N))`, rounded once from f64.
pub fn scales(n: usize) -> (f32, f32) {
    ((1.0 / n as f64).sqrt() as f32, (2.0 / n as f64).sqrt() as f32)
}

fn check_len(what: &str, n: usize) -> Result<()> {
    if n == 0 || n > MAX_LEN {
        return Err(Error::invalid(what, format!("transform length {n} is outside 1..={MAX_LEN}")));
    }
    Ok(())
}

/// The constants of a 1-D transform of length `N`: its cosine table on the device.
#[derive(Clone, Debug)]
pub struct DctPlan {
    n: usize,
    table: Tensor,
}

impl DctPlan {
    /// Uploads the table for length `n` (`1..=`[`MAX_LEN`]).
    pub fn new(gpu: &Gpu, n: usize) -> Result<DctPlan> {
        check_len("DCT length", n)?;
        Ok(DctPlan { n, table: Tensor::from_slice(gpu, &cos_table(n), &[4 * n])? })
    }

    /// The transform length `N`.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// The constants of 2-D transforms on a `gh × gw` token grid: both cosine tables, the h table
/// first, in one device tensor.
#[derive(Clone, Debug)]
pub struct GridPlan {
    gh: usize,
    gw: usize,
    tables: Tensor,
}

/// How a token tensor splits around a grid: `[batch, tokens, channels]` with `prefix` leading
/// tokens before the `gh·gw` grid tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    /// Batch size.
    pub batch: usize,
    /// Tokens per example, prefix included.
    pub tokens: usize,
    /// Leading tokens outside the grid.
    pub prefix: usize,
    /// Channels.
    pub channels: usize,
}

impl GridPlan {
    /// Uploads the tables for a `gh × gw` grid (each side in `1..=`[`MAX_LEN`]).
    pub fn new(gpu: &Gpu, gh: usize, gw: usize) -> Result<GridPlan> {
        check_len("grid height", gh)?;
        check_len("grid width", gw)?;
        let mut tables = cos_table(gh);
        tables.extend(cos_table(gw));
        Ok(GridPlan { gh, gw, tables: Tensor::from_slice(gpu, &tables, &[4 * (gh + gw)])? })
    }

    /// `(gh, gw)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.gh, self.gw)
    }

    pub(crate) fn tables(&self) -> &Tensor {
        &self.tables
    }

    /// The layout of `x`: `[B, T, C]` with `T ≥ gh·gw` (the first `T − gh·gw` tokens are the
    /// prefix) or `[B, gh, gw, C]` (no prefix).
    pub fn layout(&self, op: &'static str, x: &Tensor) -> Result<TokenLayout> {
        let grid = self.gh * self.gw;
        let bad = || {
            Error::shape(
                op,
                format!("f32 tokens [B, prefix + {grid}, C] or [B, {}, {}, C]", self.gh, self.gw),
                format!("{x:?}"),
            )
        };
        if x.dtype() != DType::F32 {
            return Err(bad());
        }
        let layout = match *x.shape() {
            [batch, tokens, channels] if tokens >= grid => {
                TokenLayout { batch, tokens, prefix: tokens - grid, channels }
            }
            [batch, h, w, channels] if h == self.gh && w == self.gw => {
                TokenLayout { batch, tokens: grid, prefix: 0, channels }
            }
            _ => return Err(bad()),
        };
        if x.len() > u32::MAX as usize {
            return Err(Error::invalid(op, format!("{x:?} has more than 2^32 elements")));
        }
        Ok(layout)
    }

    fn params(&self, l: &TokenLayout, axis: u32) -> GridParams {
        let ((s0h, sh), (s0w, sw)) = (scales(self.gh), scales(self.gw));
        GridParams {
            batch: l.batch as u32,
            tokens: l.tokens as u32,
            prefix: l.prefix as u32,
            gh: self.gh as u32,
            gw: self.gw as u32,
            channels: l.channels as u32,
            axis,
            total: (l.batch * l.tokens * l.channels) as u32,
            s0h,
            sh,
            s0w,
            sw,
        }
    }
}

fn rows(gpu: &Gpu, kernel: Kernel, op: &'static str, plan: &DctPlan, x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 || x.shape().is_empty() || x.last_dim() != plan.n {
        return Err(Error::shape(op, format!("f32 [.., {}]", plan.n), format!("{x:?}")));
    }
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let rows = x.len() / plan.n;
    let blocks = plan.n.div_ceil(WG_1D as usize);
    let groups = u32::try_from(rows * blocks)
        .map_err(|_| Error::invalid(op, format!("{x:?} needs more than 2^32 workgroups")))?;
    let (s0, s) = scales(plan.n);
    let params = DctParams { rows: rows as u32, n: plan.n as u32, blocks: blocks as u32, s0, s };
    gpu.dispatch(kernel, &[x, &plan.table], &[&y], &params, gpu.grid_1d(groups as usize, 1))?;
    Ok(y)
}

/// Orthonormal DCT-II of every row of `x` (`[.., N]`, along the last axis):
/// `X[k] = s_k Σ_n x[n] cos(π (n + ½) k / N)`.
pub fn dct2(gpu: &Gpu, plan: &DctPlan, x: &Tensor) -> Result<Tensor> {
    rows(gpu, Kernel::Dct2Rows, "dct2", plan, x)
}

/// Orthonormal DCT-III (the inverse of [`dct2`], `Cᵀ`) of every row of `x` (`[.., N]`):
/// `x[n] = Σ_k s_k X[k] cos(π (n + ½) k / N)`.
pub fn dct3(gpu: &Gpu, plan: &DctPlan, x: &Tensor) -> Result<Tensor> {
    rows(gpu, Kernel::Dct3Rows, "dct3", plan, x)
}

fn grid(gpu: &Gpu, kernel: Kernel, op: &'static str, plan: &GridPlan, x: &Tensor) -> Result<Tensor> {
    let layout = plan.layout(op, x)?;
    let mut y = x.clone();
    for axis in [1, 0] {
        let out = Tensor::uninit(gpu, x.shape(), DType::F32)?;
        gpu.dispatch_1d(kernel, &[&y, &plan.tables], &[&out], &plan.params(&layout, axis), x.len())?;
        y = out;
    }
    Ok(y)
}

/// 2-D orthonormal DCT-II over the token grid, per channel: `X = C_h · x · C_wᵀ`, prefix tokens
/// copied through. `x` is `[B, T, C]` or `[B, gh, gw, C]` (see [`GridPlan::layout`]).
pub fn dct2_grid(gpu: &Gpu, plan: &GridPlan, x: &Tensor) -> Result<Tensor> {
    grid(gpu, Kernel::Dct2GridAxis, "dct2_grid", plan, x)
}

/// 2-D orthonormal DCT-III over the token grid (the inverse of [`dct2_grid`]):
/// `x = C_hᵀ · X · C_w`, prefix tokens copied through.
pub fn dct3_grid(gpu: &Gpu, plan: &GridPlan, x: &Tensor) -> Result<Tensor> {
    grid(gpu, Kernel::Dct3GridAxis, "dct3_grid", plan, x)
}

/// [`dct2`] on the tape; backward `∂x = dct3(∂X)`. Saves only the plan.
pub fn dct2_var(tape: &mut Tape, plan: &DctPlan, x: &Var) -> Result<Var> {
    let y = dct2(tape.gpu(), plan, x.value())?;
    let plan = plan.clone();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(dct3(gpu, &plan, g)?)])))
}

/// [`dct3`] on the tape; backward `∂X = dct2(∂x)`. Saves only the plan.
pub fn dct3_var(tape: &mut Tape, plan: &DctPlan, x: &Var) -> Result<Var> {
    let y = dct3(tape.gpu(), plan, x.value())?;
    let plan = plan.clone();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(dct2(gpu, &plan, g)?)])))
}

/// [`dct2_grid`] on the tape; backward `∂x = dct3_grid(∂X)` (prefix gradients pass through).
pub fn dct2_grid_var(tape: &mut Tape, plan: &GridPlan, x: &Var) -> Result<Var> {
    let y = dct2_grid(tape.gpu(), plan, x.value())?;
    let plan = plan.clone();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(dct3_grid(gpu, &plan, g)?)])))
}

/// [`dct3_grid`] on the tape; backward `∂X = dct2_grid(∂x)` (prefix gradients pass through).
pub fn dct3_grid_var(tape: &mut Tape, plan: &GridPlan, x: &Var) -> Result<Var> {
    let y = dct3_grid(tape.gpu(), plan, x.value())?;
    let plan = plan.clone();
    Ok(tape.push(y, &[x], move |gpu, g| Ok(vec![Some(dct2_grid(gpu, &plan, g)?)])))
}
