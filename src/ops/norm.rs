//! LayerNorm over the last axis (`shaders/norm.wgsl`).

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum::{self, column_grid, rows_per_chunk};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/norm.wgsl` (`NormParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormParams {
    /// Rows (all axes but the last).
    pub rows: u32,
    /// Length of the normalised (last) axis.
    pub d: u32,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Rows summed by one thread of `layer_norm_gamma_partials`.
    pub rows_per_chunk: u32,
}

/// What [`layer_norm`] computes: the output and the row statistics its backward pass uses.
#[derive(Clone, Debug)]
pub struct LayerNormOutput {
    /// `y`, the shape of `x`.
    pub y: Tensor,
    /// Row means `μ`, `[rows]`.
    pub mean: Tensor,
    /// Row `1/√(σ² + eps)`, `[rows]`.
    pub rstd: Tensor,
}

fn rows_of(x: &Tensor) -> (usize, usize) {
    let d = x.last_dim();
    (x.len() / d.max(1), d)
}

fn params(x: &Tensor, eps: f32) -> NormParams {
    let (rows, d) = rows_of(x);
    NormParams { rows: rows as u32, d: d as u32, eps, rows_per_chunk: 0 }
}

fn check(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<()> {
    let d = x.last_dim();
    let ok = x.dtype() == DType::F32 && !x.is_empty() && !x.shape().is_empty();
    if !ok || gamma.shape() != [d] || beta.shape() != [d] || gamma.dtype() != DType::F32 || beta.dtype() != DType::F32 {
        return Err(Error::shape(
            "layer_norm",
            format!("x [.., d] (non-empty f32) with gamma and beta of shape [d] = [{d}]"),
            format!("x {x:?}, gamma {gamma:?}, beta {beta:?}"),
        ));
    }
    Ok(())
}

/// `dy` shaped as `x`, `mean` and `rstd` one value per row, all f32.
fn check_saved(op: &'static str, x: &Tensor, mean: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<()> {
    let (rows, _) = rows_of(x);
    let f32s = [x, mean, rstd, dy].iter().all(|t| t.dtype() == DType::F32);
    if !f32s || dy.shape() != x.shape() || mean.shape() != [rows] || rstd.shape() != [rows] {
        return Err(Error::shape(
            op,
            format!("f32 dy {:?} and mean, rstd [{rows}]", x.shape()),
            format!("dy {dy:?}, mean {mean:?}, rstd {rstd:?}"),
        ));
    }
    Ok(())
}

/// One workgroup per row; rows beyond one grid dimension fold into the second.
fn row_grid(gpu: &Gpu, rows: usize) -> [u32; 3] {
    gpu.grid_1d(rows, 1)
}

/// Which kernels compute LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NormKernel {
    /// `Rows` on CPU adapters (lavapipe; [`Gpu::cpu_kernels`]) when `d % 4 = 0` and
    /// `d ≤` [`ROWS_MAX_D`], `Workgroup` otherwise.
    #[default]
    Auto,
    /// `norm.wgsl`: one workgroup per row with a tree reduction (GPUs; any `d`).
    Workgroup,
    /// `norm_rows.wgsl`: one invocation per row, 8 rows per workgroup (CPU drivers);
    /// needs `d % 4 = 0` and `d ≤` [`ROWS_MAX_D`].
    Rows,
}

/// The widest row the rows kernels take. One invocation runs three loops over the row's `d/4`
/// vec4s, and lavapipe ends an invocation's loops after 65,535 iterations in all, without a
/// word: wider rows would be normalised in part.
pub const ROWS_MAX_D: usize = 65_536;

/// Whether `kernel` means the rows kernels for `x` (an error when asked for and impossible).
fn use_rows(gpu: &Gpu, x: &Tensor, kernel: NormKernel) -> Result<bool> {
    let d = x.last_dim();
    let fits = d.is_multiple_of(4) && d <= ROWS_MAX_D;
    match kernel {
        NormKernel::Auto => Ok(fits && gpu.cpu_kernels()),
        NormKernel::Workgroup => Ok(false),
        NormKernel::Rows if fits => Ok(true),
        NormKernel::Rows => Err(Error::invalid(
            "layer_norm (rows kernel)",
            format!("d = {d} is not a multiple of 4 of at most {ROWS_MAX_D}"),
        )),
    }
}

/// `y = (x − μ)/√(σ² + eps)·γ + β` over the last axis of `x` (`μ`, `σ²` the row mean and
/// biased variance, computed in two passes). Returns `y` with the row statistics.
pub fn layer_norm(gpu: &Gpu, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<LayerNormOutput> {
    layer_norm_with(gpu, x, gamma, beta, eps, NormKernel::Auto)
}

/// [`layer_norm`] on the chosen kernel.
pub fn layer_norm_with(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    kernel: NormKernel,
) -> Result<LayerNormOutput> {
    check(x, gamma, beta)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid("layer_norm eps", format!("{eps} is not a finite value ≥ 0")));
    }
    let (rows, _) = rows_of(x);
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let mean = Tensor::uninit(gpu, &[rows], DType::F32)?;
    let rstd = Tensor::uninit(gpu, &[rows], DType::F32)?;
    let (kernel, grid) = match use_rows(gpu, x, kernel)? {
        true => (Kernel::LayerNormRows, gpu.grid_1d(rows, 8)),
        false => {
            let d = x.last_dim();
            gpu.check_loops(|| format!("layer_norm over rows of {d}"), Gpu::row_loops(3, d, 2))?;
            (Kernel::LayerNorm, row_grid(gpu, rows))
        }
    };
    gpu.dispatch(kernel, &[x, gamma, beta], &[&y, &mean, &rstd], &params(x, eps), grid)?;
    Ok(LayerNormOutput { y, mean, rstd })
}

/// `∂x = rstd·(g − mean(g) − x̂·mean(g·x̂))` per row, with `g = ∂y·γ` and
/// `x̂ = (x − μ)·rstd`; `mean`, `rstd` as returned by [`layer_norm`].
pub fn layer_norm_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    layer_norm_backward_with(gpu, x, gamma, mean, rstd, dy, NormKernel::Auto)
}

/// [`layer_norm_backward`] on the chosen kernel.
pub fn layer_norm_backward_with(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    kernel: NormKernel,
) -> Result<Tensor> {
    let (rows, d) = rows_of(x);
    check_saved("layer_norm_backward", x, mean, rstd, dy)?;
    if gamma.shape() != [d] || gamma.dtype() != DType::F32 {
        return Err(Error::shape("layer_norm_backward", format!("f32 gamma [{d}]"), format!("{gamma:?}")));
    }
    let dx = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let inputs = [x, gamma, mean, rstd, dy];
    let (kernel, grid) = match use_rows(gpu, x, kernel)? {
        true => (Kernel::LayerNormBackwardRows, gpu.grid_1d(rows, 8)),
        false => {
            gpu.check_loops(|| format!("layer_norm_backward over rows of {d}"), Gpu::row_loops(2, d, 1))?;
            (Kernel::LayerNormBackward, row_grid(gpu, rows))
        }
    };
    gpu.dispatch(kernel, &inputs, &[&dx], &params(x, 0.0), grid)?;
    Ok(dx)
}

/// `∂γ = Σ_rows ∂y ⊙ x̂`, `[d]`: partial sums over chunks of rows, then their column sums.
pub fn layer_norm_grad_gamma(gpu: &Gpu, x: &Tensor, mean: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (rows, d) = rows_of(x);
    check_saved("layer_norm_grad_gamma", x, mean, rstd, dy)?;
    let per = rows_per_chunk(gpu, rows);
    let chunks = rows.div_ceil(per);
    let partials = Tensor::uninit(gpu, &[chunks, d], DType::F32)?;
    let params = NormParams { rows_per_chunk: per as u32, ..params(x, 0.0) };
    gpu.dispatch(Kernel::LayerNormGammaPartials, &[x, mean, rstd, dy], &[&partials], &params, column_grid(d, chunks))?;
    sum::sum_rows(gpu, &partials, d)
}

/// LayerNorm on the tape: `y = (x − μ)/√(σ² + eps)·γ + β` over the last axis.
///
/// Backward: `∂x` by [`layer_norm_backward`], `∂γ = Σ_rows ∂y ⊙ x̂`, `∂β = Σ_rows ∂y`, each
/// only for an input that requires a gradient (frozen γ, β cost nothing). The rule saves
/// `x`, `μ`, `rstd` when `∂x` or `∂γ` is wanted and `γ` only for `∂x`.
pub fn layer_norm_var(tape: &mut Tape, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
    let out = layer_norm(tape.gpu(), x.value(), gamma.value(), beta.value(), eps)?;
    let need = [x.requires_grad(), gamma.requires_grad(), beta.requires_grad()];
    let stats = (need[0] || need[1]).then(|| (x.value().clone(), out.mean.clone(), out.rstd.clone()));
    let saved_gamma = need[0].then(|| gamma.value().clone());
    Ok(tape.push(out.y, &[x, gamma, beta], move |gpu, dy| {
        let mut grads = vec![None, None, None];
        if let Some((x, mean, rstd)) = &stats {
            if let Some(gamma) = &saved_gamma {
                grads[0] = Some(layer_norm_backward(gpu, x, gamma, mean, rstd, dy)?);
            }
            if need[1] {
                grads[1] = Some(layer_norm_grad_gamma(gpu, x, mean, rstd, dy)?);
            }
        }
        if need[2] {
            grads[2] = Some(sum::sum_rows(gpu, dy, dy.last_dim())?);
        }
        Ok(grads)
    }))
}
