//! Batched matrix products (`shaders/matmul.wgsl`).
//!
//! `C[z] = alpha · op(A[z]) · op(B[z]) (+ bias) (+ addend)` where `op` is the identity or the
//! transpose of the last two axes. The leading (batch) axes of `A` and `B` must match, or
//! one operand has a single matrix (no batch axes, or all of them 1) shared by every batch.

use std::sync::OnceLock;

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::sum;
use crate::tensor::{DType, Tensor, numel};

/// Immediates of `shaders/matmul.wgsl` (`MatmulParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Rows of the product.
    pub m: u32,
    /// Columns of the product.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// Elements between consecutive matrices of `A` (0: shared).
    pub a_stride: u32,
    /// Elements between consecutive matrices of `B` (0: shared).
    pub b_stride: u32,
    /// `TRANS_A | TRANS_B | BIAS | ADDEND | TRANS_OUT`.
    pub flags: u32,
    /// Scale of the product.
    pub alpha: f32,
    /// `matmul_narrow` only: the depth of one k-chunk when the product is split over k into
    /// partial products (0: no split).
    pub k_split: u32,
}

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
const NARROW_TILE: (usize, usize) = (256, 8);
/// Products with at most this many columns (or rows) use the narrow kernel.
const NARROW_MAX: usize = 16;

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// `Rows` on CPU adapters (lavapipe) when the shape allows it; on other adapters
    /// `Tiled64` when `Tiled` would have fewer than 512 workgroups, `Tiled` otherwise, and
    /// narrow products split over k (`SplitK`) when they would have fewer than 64
    /// workgroups. `PEFT_WGPU_MATMUL` (`tiled`, `tiled64`, `splitk`, `rows`) overrides the
    /// choice, for benchmarking.
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
    /// Needs m ≥ 32, n > 16, n and k multiples of 4 and, with `Aᵀ`, m a multiple of 4;
    /// other shapes are an error.
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

/// Which operands are transposed, and the scale of the product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Use `Aᵀ` (the last two axes of `A` swapped).
    pub trans_a: bool,
    /// Use `Bᵀ`.
    pub trans_b: bool,
    /// Scale of the product (not of the bias or addend).
    pub alpha: f32,
}

impl Default for MatmulSpec {
    fn default() -> Self {
        MatmulSpec { trans_a: false, trans_b: false, alpha: 1.0 }
    }
}

impl MatmulSpec {
    /// `A · B`.
    pub fn new() -> Self {
        MatmulSpec::default()
    }

    /// Uses `Aᵀ` instead of `A`.
    pub fn transpose_a(self) -> Self {
        MatmulSpec { trans_a: !self.trans_a, ..self }
    }

    /// Uses `Bᵀ` instead of `B`.
    pub fn transpose_b(self) -> Self {
        MatmulSpec { trans_b: !self.trans_b, ..self }
    }

    /// Scales the product by `alpha`.
    pub fn scaled(self, alpha: f32) -> Self {
        MatmulSpec { alpha, ..self }
    }
}

/// The shapes of one product: `batch` matrices `m×k · k×n`.
#[derive(Clone, Copy, Debug)]
struct Plan {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a_stride: usize,
    b_stride: usize,
}

fn split(shape: &[usize]) -> (&[usize], usize, usize) {
    let r = shape.len();
    (&shape[..r - 2], shape[r - 2], shape[r - 1])
}

/// Checks the operands and returns the plan and the output shape.
fn plan(a: &Tensor, b: &Tensor, spec: MatmulSpec) -> Result<(Plan, Vec<usize>)> {
    let bad = |expected: &str| {
        Error::shape("matmul", expected.to_string(), format!("{:?} and {:?} ({spec:?})", a.shape(), b.shape()))
    };
    if a.shape().len() < 2 || b.shape().len() < 2 || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(bad("two f32 tensors of rank ≥ 2"));
    }
    let (batch_a, ra, ca) = split(a.shape());
    let (batch_b, rb, cb) = split(b.shape());
    let (m, k) = if spec.trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if spec.trans_b { (cb, rb) } else { (rb, cb) };
    if k != kb {
        return Err(bad("inner dimensions that agree"));
    }
    let (za, zb) = (numel(batch_a), numel(batch_b));
    let batch_shape = match (za, zb) {
        _ if batch_a == batch_b => batch_a,
        (1, 1) if batch_a.len() >= batch_b.len() => batch_a,
        (1, _) => batch_b,
        (_, 1) => batch_a,
        _ => return Err(bad("equal batch axes, or one operand with a single matrix")),
    };
    let batch = numel(batch_shape);
    let stride = |z: usize, len: usize| if z == 1 { 0 } else { len };
    let plan = Plan { batch, m, n, k, a_stride: stride(za, ra * ca), b_stride: stride(zb, rb * cb) };
    let mut out = batch_shape.to_vec();
    out.extend([m, n]);
    Ok((plan, out))
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
fn launch(
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
    let fits = rows_kernel_fits(m, n, k, spec.trans_a);
    let requested = match kernel {
        MatmulKernel::Auto => env_kernel().unwrap_or(MatmulKernel::Auto),
        other => other,
    };
    // Auto's choices depend on the adapter: CPU kernels on CPU adapters, GPU layouts elsewhere.
    let on_cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let rows = match requested {
        MatmulKernel::Auto => fits && on_cpu,
        MatmulKernel::Tiled | MatmulKernel::Tiled64 | MatmulKernel::SplitK => false,
        MatmulKernel::Rows if fits => true,
        MatmulKernel::Rows => {
            return Err(Error::invalid(
                "matmul (rows kernel)",
                format!("a {m}×{k}·{k}×{n} product (Aᵀ: {}) does not fit the rows kernel", spec.trans_a),
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

/// The kernel `PEFT_WGPU_MATMUL` names, read once; `None` when unset, empty or `auto`.
fn env_kernel() -> Option<MatmulKernel> {
    static KERNEL: OnceLock<Option<MatmulKernel>> = OnceLock::new();
    *KERNEL.get_or_init(|| match std::env::var("PEFT_WGPU_MATMUL").ok()?.to_ascii_lowercase().as_str() {
        "tiled" => Some(MatmulKernel::Tiled),
        "tiled64" => Some(MatmulKernel::Tiled64),
        "splitk" => Some(MatmulKernel::SplitK),
        "rows" => Some(MatmulKernel::Rows),
        _ => None,
    })
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
    let kernel = match (spec.trans_a, spec.trans_b) {
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

/// `alpha · op(A) · op(B) (+ bias) (+ addend)`.
///
/// `A`: `[..., r, c]` (op(A) is `m×k`), `B`: `[..., r, c]` (op(B) is `k×n`); batch axes equal
/// or one side a single matrix. The result is `[batch..., m, n]`; `bias` (`[n]`) is added to
/// every row and `addend` (the result's shape) elementwise, in the same pass.
pub fn matmul(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    spec: MatmulSpec,
    bias: Option<&Tensor>,
    addend: Option<&Tensor>,
) -> Result<Tensor> {
    matmul_with(gpu, a, b, spec, bias, addend, MatmulKernel::Auto)
}

/// [`matmul`] on the chosen kernel.
pub fn matmul_with(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    spec: MatmulSpec,
    bias: Option<&Tensor>,
    addend: Option<&Tensor>,
    kernel: MatmulKernel,
) -> Result<Tensor> {
    let (plan, out_shape) = plan(a, b, spec)?;
    if let Some(bias) = bias
        && (bias.shape() != [plan.n] || bias.dtype() != DType::F32)
    {
        return Err(Error::shape("matmul bias", format!("an f32 tensor of shape [{}]", plan.n), format!("{bias:?}")));
    }
    if let Some(addend) = addend
        && (addend.shape() != out_shape.as_slice() || addend.dtype() != DType::F32)
    {
        return Err(Error::shape(
            "matmul addend",
            format!("an f32 tensor of shape {out_shape:?}"),
            format!("{addend:?}"),
        ));
    }
    let out = Tensor::uninit(gpu, &out_shape, DType::F32)?;
    launch(gpu, a, b, plan, spec, (bias, addend), &out, kernel)?;
    Ok(out)
}

/// Sums `grad` over the batch axes it has beyond `shape` (a broadcast operand's gradient).
fn reduce_to(gpu: &Gpu, grad: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if grad.len() == numel(shape) {
        return grad.reshape(shape);
    }
    sum::sum_rows(gpu, grad, numel(shape))?.reshape(shape)
}

/// Gradient of `op(A)`'s operand `A` for `C = alpha·op(A)·op(B)`: `alpha·∂C·op(B)ᵀ`, or its
/// transpose when `A` is stored transposed, summed over batches that shared `A`.
fn grad_a(gpu: &Gpu, g: &Tensor, b: &Tensor, spec: MatmulSpec, a_shape: &[usize]) -> Result<Tensor> {
    let s = MatmulSpec::new().scaled(spec.alpha);
    let ga = if spec.trans_a {
        let s = MatmulSpec { trans_a: spec.trans_b, trans_b: true, ..s };
        matmul(gpu, b, g, s, None, None)?
    } else {
        matmul(gpu, g, b, MatmulSpec { trans_b: !spec.trans_b, ..s }, None, None)?
    };
    reduce_to(gpu, &ga, a_shape)
}

/// Gradient of `B`: `alpha·op(A)ᵀ·∂C`, or its transpose when `B` is stored transposed.
fn grad_b(gpu: &Gpu, g: &Tensor, a: &Tensor, spec: MatmulSpec, b_shape: &[usize]) -> Result<Tensor> {
    let s = MatmulSpec::new().scaled(spec.alpha);
    let gb = if spec.trans_b {
        let s = MatmulSpec { trans_a: true, trans_b: spec.trans_a, ..s };
        matmul(gpu, g, a, s, None, None)?
    } else {
        matmul(gpu, a, g, MatmulSpec { trans_a: !spec.trans_a, ..s }, None, None)?
    };
    reduce_to(gpu, &gb, b_shape)
}

/// Tape op `C = alpha · op(A) · op(B) (+ bias) (+ addend)` (see [`matmul`]).
///
/// Backward: `∂op(A) = alpha·∂C·op(B)ᵀ`, `∂op(B) = alpha·op(A)ᵀ·∂C` (transposed back when
/// an operand is stored transposed, and summed over the batches that shared it);
/// `∂bias = Σ_rows ∂C`; `∂addend = ∂C`. `B` is saved only when `A` needs a gradient and
/// `A` only when `B` does.
pub fn matmul_var(
    tape: &mut Tape,
    a: &Var,
    b: &Var,
    spec: MatmulSpec,
    bias: Option<&Var>,
    addend: Option<&Var>,
) -> Result<Var> {
    let y = matmul(tape.gpu(), a.value(), b.value(), spec, bias.map(Var::value), addend.map(Var::value))?;
    let for_a = a.requires_grad().then(|| (b.value().clone(), a.shape().to_vec()));
    let for_b = b.requires_grad().then(|| (a.value().clone(), b.shape().to_vec()));
    // One entry per parent: None for an absent epilogue term, Some(need) for a present one.
    let bias_grad = bias.map(Var::requires_grad);
    let addend_grad = addend.map(Var::requires_grad);
    let n = y.last_dim();
    let mut parents = vec![a, b];
    parents.extend(bias);
    parents.extend(addend);
    Ok(tape.push(y, &parents, move |gpu, g| {
        let mut grads = vec![
            for_a.map(|(b, shape)| grad_a(gpu, g, &b, spec, &shape)).transpose()?,
            for_b.map(|(a, shape)| grad_b(gpu, g, &a, spec, &shape)).transpose()?,
        ];
        if let Some(need) = bias_grad {
            grads.push(need.then(|| sum::sum_rows(gpu, g, n)).transpose()?);
        }
        if let Some(need) = addend_grad {
            grads.push(need.then(|| g.clone()));
        }
        Ok(grads)
    }))
}
