//! Linear layers in PyTorch's layout: `y = x Wᵀ + b`, `W` `[out, in]`.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::matmul::{MatmulSpec, matmul};
use crate::ops::sum;
use crate::tensor::Tensor;

/// Checks shapes and returns `(rows, in, out)` where `rows` is the product of `x`'s leading
/// axes.
fn dims(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    let (&[out, inn], Some(&x_in)) = (w.shape(), x.shape().last()) else {
        return Err(Error::shape("linear", "x [..., in] and W [out, in]", format!("{x:?} and {w:?}")));
    };
    if x_in != inn {
        return Err(Error::shape("linear", format!("x [..., {inn}] for W {:?}", w.shape()), format!("{x:?}")));
    }
    if let Some(b) = b
        && b.shape() != [out]
    {
        return Err(Error::shape("linear bias", format!("[{out}]"), format!("{b:?}")));
    }
    // The leading axes of a tensor that exists: their product fits unless `in` is 0.
    let rows = crate::tensor::checked_numel(&x.shape()[..x.shape().len() - 1])
        .ok_or_else(|| Error::shape("linear", "leading axes whose product fits usize", format!("{x:?}")))?;
    Ok((rows, inn, out))
}

fn out_shape(x: &Tensor, out: usize) -> Vec<usize> {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("dims checked x has an axis") = out;
    shape
}

/// `y = x Wᵀ + b` for `x` `[..., in]`, `W` `[out, in]`, `b` `[out]`; `y` is `[..., out]`.
/// The leading axes of `x` become rows of one product and the bias is added in its epilogue.
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (rows, inn, out) = dims(x, w, b)?;
    let y = matmul(gpu, &x.reshape(&[rows, inn])?, w, MatmulSpec::new().transpose_b(), b, None)?;
    y.reshape(&out_shape(x, out))
}

/// Tape op [`linear`].
///
/// Backward, with `∂y` viewed `[rows, out]` and `x` `[rows, in]`: `∂x = ∂y W`,
/// `∂W = ∂yᵀ x` (summed over every leading axis by the product itself), `∂b = Σ_rows ∂y`.
/// `W` is saved only when `x` needs a gradient and `x` only when `W` does, so a frozen
/// base weight never keeps its input alive.
pub fn linear_var(tape: &mut Tape, x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let (rows, inn, out) = dims(x.value(), w.value(), b.map(Var::value))?;
    let y = linear(tape.gpu(), x.value(), w.value(), b.map(Var::value))?;
    let for_x = x.requires_grad().then(|| (w.value().clone(), x.shape().to_vec()));
    let for_w = w.requires_grad().then(|| x.value().clone());
    let bias_grad = b.map(Var::requires_grad);
    let mut parents = vec![x, w];
    parents.extend(b);
    Ok(tape.push(y, &parents, move |gpu, g| {
        let g2 = g.reshape(&[rows, out])?;
        let gx =
            for_x.map(|(w, shape)| matmul(gpu, &g2, &w, MatmulSpec::new(), None, None)?.reshape(&shape)).transpose()?;
        let gw = for_w
            .map(|x| matmul(gpu, &g2, &x.reshape(&[rows, inn])?, MatmulSpec::new().transpose_a(), None, None))
            .transpose()?;
        let mut grads = vec![gx, gw];
        if let Some(need) = bias_grad {
            grads.push(need.then(|| sum::sum_rows(gpu, &g2, out)).transpose()?);
        }
        Ok(grads)
    }))
}
