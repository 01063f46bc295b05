//! Batched matrix products (`shaders/matmul.wgsl`).
//!
//! `C[z] = alpha · op(A[z]) · op(B[z]) (+ bias) (+ addend)` where `op` is the identity or the
//! transpose of the last two axes. The leading (batch) axes of `A` and `B` must match, or
//! one operand has a single matrix (no batch axes, or all of them 1) shared by every batch.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::sum;
use crate::tensor::{DType, Tensor, numel};

mod launch;

pub use launch::MatmulKernel;
use launch::launch;

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
    if !spec.alpha.is_finite() {
        return Err(Error::invalid("matmul alpha", format!("{} is not finite", spec.alpha)));
    }
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
    if plan.k > CPU_MAX_DEPTH && gpu.loop_limit().is_some() {
        return in_depth_chunks(gpu, [a, b], plan.k, spec, (bias, addend), kernel);
    }
    let out = Tensor::uninit(gpu, &out_shape, DType::F32)?;
    launch(gpu, a, b, plan, spec, (bias, addend), &out, kernel)?;
    Ok(out)
}

/// The longest inner dimension one product computes on a CPU adapter. lavapipe (Mesa's
/// llvmpipe) stops the loops of a shader invocation after 65,535 iterations in all, without
/// a word: a product whose loop over `k` runs longer (about 58,000 on the tiled kernels)
/// would sum only the first part of it. Longer products go in chunks of this depth.
const CPU_MAX_DEPTH: usize = 16_384;

/// [`matmul_with`] as a sum of products over chunks of [`CPU_MAX_DEPTH`] along `k`: each
/// chunk's product is added to the previous ones through the addend epilogue (the bias with
/// the first, `alpha` scaling each).
fn in_depth_chunks(
    gpu: &Gpu,
    [a, b]: [&Tensor; 2],
    k: usize,
    spec: MatmulSpec,
    (bias, addend): (Option<&Tensor>, Option<&Tensor>),
    kernel: MatmulKernel,
) -> Result<Tensor> {
    // The axis of k in each operand as stored: op(A) is m×k, op(B) k×n.
    let k_axis_a = a.shape().len() - if spec.trans_a { 2 } else { 1 };
    let k_axis_b = b.shape().len() - if spec.trans_b { 1 } else { 2 };
    let mut sum: Option<Tensor> = addend.cloned();
    for start in (0..k).step_by(CPU_MAX_DEPTH) {
        let depth = CPU_MAX_DEPTH.min(k - start);
        let a_part = crate::ops::shape::slice(gpu, a, k_axis_a, start, depth)?;
        let b_part = crate::ops::shape::slice(gpu, b, k_axis_b, start, depth)?;
        let first_bias = if start == 0 { bias } else { None };
        sum = Some(matmul_with(gpu, &a_part, &b_part, spec, first_bias, sum.as_ref(), kernel)?);
    }
    sum.ok_or_else(|| Error::invalid("matmul", "no depth to split"))
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
