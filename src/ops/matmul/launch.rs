//! Which kernel computes a product, and recording it: the tiled GPU kernels of
//! `shaders/matmul.wgsl` (128×128, 64×64 and narrow 256×8 tiles, narrow products split over k
//! on GPUs) and the CPU kernel of `shaders/matmul_rows.wgsl`.

use std::sync::OnceLock;

use super::{MatmulParams, MatmulSpec, Plan};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor};

const TRANS_A: u32 = 1;
const TRANS_B: u32 = 2;
const BIAS: u32 = 4;
const ADDEND: u32 = 8;
const TRANS_OUT: u32 = 16;

/// Rows and columns of C one workgroup of the general kernel and of the narrow one covers.
const TILE: (usize, usize) = (128, 128);
/// The same for `matmul64`.
const SMALL_TILE: (usize, usize) = (64, 64);
/// Below this many 128×128 workgroups, `Auto` takes 64×64 tiles on GPUs (a large GPU runs
/// 100+ workgroups at once; 1024×1024 is only 64 of the big tiles).
const MIN_WORKGROUPS: usize = 512;
/// Rows and columns of C one workgroup of the CPU kernel (`matmul_rows.wgsl`) covers.
const ROWS_TILE: (usize, usize) = (32, 128);
/// Lanes of `matmul_rows.wgsl` that share op(A)'s rows by subgroup operations: the device's
/// subgroups must have at least this many.
const ROWS_SHARE: u32 = 4;
const NARROW_TILE: (usize, usize) = (256, 8);
/// Products with at most this many columns (or rows) use the narrow kernel.
const NARROW_MAX: usize = 16;

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// On CPU adapters (lavapipe; [`Gpu::cpu_kernels`]) `Rows` with subgroups of at least 4
    /// lanes when the shape allows it, `Tiled` otherwise; on other adapters `Tiled64` when
    /// `Tiled` would have fewer than 512 workgroups, `Tiled` otherwise, and narrow products
    /// split over k (`SplitK`) when they would have fewer than 64 workgroups.
    /// `PEFT_WGPU_MATMUL` (`tiled`, `tiled64`, `splitk`, `rows`) overrides the choice, for
    /// benchmarking.
    #[default]
    Auto,
    /// The GPU kernels of `matmul.wgsl`: 128×128 tiles in workgroup memory, or 256×8 tiles
    /// for products with at most 16 rows or columns. Any shape.
    Tiled,
    /// As `Tiled` with 64×64 tiles: four times the workgroups, for products too small to
    /// fill a large GPU with 128×128 tiles. Any shape.
    Tiled64,
    /// As `Tiled`, and a narrow product (≤ 16 columns or rows) of one matrix without bias or
    /// addend and with k > 128 is split over k: partial products on more workgroups, then
    /// their sum. Other shapes as `Tiled`.
    SplitK,
    /// The CPU kernel of `matmul_rows.wgsl`: 8-lane workgroups sharing 32 rows, vec4 loads.
    /// Needs m ≥ 32, n > 16, n and k multiples of 4 and, with `Aᵀ`, m a multiple of 4, and a
    /// device with subgroups of at least 4 lanes ([`Gpu::has_subgroups_of`]); otherwise an
    /// error.
    Rows,
}

/// Whether `matmul_rows.wgsl` computes an `m×k · k×n` product (see [`MatmulKernel::Rows`]).
fn rows_kernel_fits(m: usize, n: usize, k: usize, trans_a: bool) -> bool {
    m >= ROWS_TILE.0
        && n > NARROW_MAX
        && n.is_multiple_of(4)
        && k.is_multiple_of(4)
        && (!trans_a || m.is_multiple_of(4))
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("matmul {what}"), format!("{v} exceeds u32")))
}

impl MatmulParams {
    /// The immediates of a product laid out by `plan`, each size checked to fit a u32.
    fn of(plan: Plan, flags: u32, alpha: f32) -> Result<MatmulParams> {
        Ok(MatmulParams {
            m: u32_of(plan.m, "rows")?,
            n: u32_of(plan.n, "columns")?,
            k: u32_of(plan.k, "depth")?,
            a_stride: u32_of(plan.a_stride, "batch stride")?,
            b_stride: u32_of(plan.b_stride, "batch stride")?,
            flags,
            alpha,
            k_split: 0,
        })
    }
}

/// Records the product into `out` (shape checked by the caller).
#[expect(clippy::too_many_arguments, reason = "a product's operands, plan, epilogue, output and kernel choice")]
pub(super) fn launch(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    plan: Plan,
    spec: MatmulSpec,
    epilogue: (Option<&Tensor>, Option<&Tensor>),
    out: &Tensor,
    kernel: MatmulKernel,
) -> Result<()> {
    let Plan { mut batch, mut m, mut n, k, mut a_stride, mut b_stride } = plan;
    let (mut a, mut b) = (a, b);
    let mut flags = u32::from(spec.trans_a) * TRANS_A + u32::from(spec.trans_b) * TRANS_B;
    // A shared op(B) and a row-major op(A): the batch is just more rows.
    if batch > 1 && b_stride == 0 && a_stride != 0 && !spec.trans_a {
        m *= batch;
        batch = 1;
        a_stride = 0;
    }
    let fits = rows_kernel_fits(m, n, k, spec.trans_a) && gpu.has_subgroups_of(ROWS_SHARE);
    let requested = match kernel {
        MatmulKernel::Auto => env_kernel()?.unwrap_or(MatmulKernel::Auto),
        other => other,
    };
    // Auto's choices depend on the kernel family: CPU kernels on CPU adapters, GPU layouts elsewhere.
    let on_cpu = gpu.cpu_kernels();
    let rows = match requested {
        MatmulKernel::Auto => fits && on_cpu,
        MatmulKernel::Tiled | MatmulKernel::Tiled64 | MatmulKernel::SplitK => false,
        MatmulKernel::Rows if fits => true,
        MatmulKernel::Rows => {
            return Err(Error::invalid(
                "matmul (rows kernel)",
                format!(
                    "a {m}×{k}·{k}×{n} product (Aᵀ: {}) does not fit the rows kernel{}",
                    spec.trans_a,
                    if gpu.has_subgroups_of(ROWS_SHARE) { "" } else { ", which needs subgroups of at least 4 lanes" }
                ),
            ));
        }
    };
    if rows {
        return launch_rows(gpu, [a, b], Plan { batch, m, n, k, a_stride, b_stride }, spec, epilogue, out);
    }
    // Few rows, many columns: compute the transpose with the narrow kernel, stored transposed.
    if m <= NARROW_MAX && n > NARROW_MAX {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut a_stride, &mut b_stride);
        std::mem::swap(&mut m, &mut n);
        flags = u32::from(!spec.trans_b) * TRANS_A + u32::from(!spec.trans_a) * TRANS_B + TRANS_OUT;
    }
    let (bias, addend) = epilogue;
    if bias.is_some() {
        flags |= BIAS;
    }
    if addend.is_some() {
        flags |= ADDEND;
    }
    let params = MatmulParams::of(Plan { batch, m, n, k, a_stride, b_stride }, flags, spec.alpha)?;
    let big_tiles = m.div_ceil(TILE.0) * n.div_ceil(TILE.1) * batch;
    let small = match requested {
        MatmulKernel::Tiled64 => true,
        MatmulKernel::Auto => big_tiles < MIN_WORKGROUPS && !on_cpu,
        _ => false,
    };
    let (kernel, (tm, tn)) = if n <= NARROW_MAX {
        (Kernel::MatmulNarrow, NARROW_TILE)
    } else if small {
        (Kernel::Matmul64, SMALL_TILE)
    } else {
        (Kernel::Matmul, TILE)
    };
    let grid = [u32_of(n.div_ceil(tn), "tiles")?, u32_of(m.div_ceil(tm), "tiles")?, u32_of(batch, "batch")?];
    // Unused epilogue bindings alias `a`; the kernel does not read them.
    let inputs = [a, b, bias.unwrap_or(a), addend.unwrap_or(a)];
    let splittable = kernel == Kernel::MatmulNarrow && batch == 1 && bias.is_none() && addend.is_none();
    let chunk = match requested {
        MatmulKernel::SplitK if splittable => k_chunk(k, grid[0] as usize * grid[1] as usize, true),
        MatmulKernel::Auto if splittable && !on_cpu => k_chunk(k, grid[0] as usize * grid[1] as usize, false),
        _ => None,
    };
    let Some(chunk) = chunk else {
        return gpu.dispatch(kernel, &inputs, &[out], &params, grid);
    };
    // Partial products of k-chunks, then their sum into `out` (same layout, one matrix).
    let chunks = k.div_ceil(chunk);
    let partial = Tensor::uninit(gpu, &[chunks, m * n], DType::F32)?;
    let params = MatmulParams { k_split: u32_of(chunk, "depth")?, ..params };
    gpu.dispatch(kernel, &inputs, &[&partial], &params, [grid[0], grid[1], u32_of(chunks, "chunks")?])?;
    let total = sum::sum_rows(gpu, &partial, m * n)?;
    gpu.copy(&total, 0, out, 0, m * n);
    Ok(())
}

/// Workgroups below which a narrow product is split over k on GPUs.
const SPLIT_BELOW_WORKGROUPS: usize = 64;
/// Shortest k-chunk of a split (a multiple of the kernel's depth step, 32).
const MIN_K_CHUNK: usize = 128;

/// The k-chunk depth that gives a narrow product of `workgroups` workgroups about 128 in all,
/// `None` when it is not worth splitting (enough workgroups, unless `forced`, or k too short).
fn k_chunk(k: usize, workgroups: usize, forced: bool) -> Option<usize> {
    if k <= MIN_K_CHUNK || (!forced && workgroups >= SPLIT_BELOW_WORKGROUPS) {
        return None;
    }
    let chunks = (2 * SPLIT_BELOW_WORKGROUPS).div_ceil(workgroups.max(1)).max(2);
    Some(k.div_ceil(chunks).next_multiple_of(32).max(MIN_K_CHUNK))
}

/// The kernel `PEFT_WGPU_MATMUL` names, read once; `None` when unset, empty or `auto`, an
/// error naming the variable for any other value.
fn env_kernel() -> Result<Option<MatmulKernel>> {
    static KERNEL: OnceLock<std::result::Result<Option<MatmulKernel>, String>> = OnceLock::new();
    let choices = [
        ("tiled", MatmulKernel::Tiled),
        ("tiled64", MatmulKernel::Tiled64),
        ("splitk", MatmulKernel::SplitK),
        ("rows", MatmulKernel::Rows),
    ];
    crate::ops::env_choice(&KERNEL, "PEFT_WGPU_MATMUL", &choices)
}

/// Records the product on `matmul_rows.wgsl` (the shape fits, see [`rows_kernel_fits`]).
fn launch_rows(
    gpu: &Gpu,
    [a, b]: [&Tensor; 2],
    plan: Plan,
    spec: MatmulSpec,
    (bias, addend): (Option<&Tensor>, Option<&Tensor>),
    out: &Tensor,
) -> Result<()> {
    let Plan { batch, m, n, .. } = plan;
    let flags = u32::from(bias.is_some()) * BIAS + u32::from(addend.is_some()) * ADDEND;
    let params = MatmulParams::of(plan, flags, spec.alpha)?;
    // Subgroups of 8 or more share op(A)'s rows among 8 lanes: half the loads of op(A).
    let share8 = gpu.has_subgroups_of(8);
    let kernel = match (spec.trans_a, spec.trans_b) {
        (false, false) if share8 => Kernel::MatmulRows8Nn,
        (false, true) if share8 => Kernel::MatmulRows8Nt,
        (false, false) => Kernel::MatmulRowsNn,
        (false, true) => Kernel::MatmulRowsNt,
        (true, false) => Kernel::MatmulRowsTn,
        (true, true) => Kernel::MatmulRowsTt,
    };
    let (tm, tn) = ROWS_TILE;
    let grid = [u32_of(n.div_ceil(tn), "tiles")?, u32_of(m.div_ceil(tm), "tiles")?, u32_of(batch, "batch")?];
    let inputs = [a, b, bias.unwrap_or(a), addend.unwrap_or(a)];
    gpu.dispatch(kernel, &inputs, &[out], &params, grid)
}
