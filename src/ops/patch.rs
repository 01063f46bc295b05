//! ViT's patch embedding: a convolution whose stride equals its kernel, computed as patchify
//! (im2col without overlap, `shaders/shape.wgsl`) followed by a linear layer.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::linear::linear_var;
use crate::ops::shape::reshape_var;
use crate::tensor::{DType, Tensor};

/// Immediates of `patchify` and `unpatchify` (`PatchParams` in `shaders/shape.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PatchParams {
    /// Elements of the output.
    pub n: u32,
    /// Image channels.
    pub channels: u32,
    /// Image height.
    pub height: u32,
    /// Image width.
    pub width: u32,
    /// Patch height `ph` (kernel and stride along the rows).
    pub ph: u32,
    /// Patch width `pw` (kernel and stride along the columns).
    pub pw: u32,
    /// Patches per column, `⌊H / ph⌋`.
    pub gh: u32,
    /// Patches per row, `⌊W / pw⌋`.
    pub gw: u32,
}

/// Checks `[B, C, H, W]` images against a `[ph, pw]` patch for `op` and returns the kernel
/// parameters for `n` output elements (`n = 0`: fill in later).
fn params(op: &'static str, images: &[usize], patch: [usize; 2]) -> Result<PatchParams> {
    let &[_, c, h, w] = images else {
        return Err(Error::shape(op, "images [B, C, H, W]", format!("{images:?}")));
    };
    let [ph, pw] = patch;
    if ph == 0 || pw == 0 {
        return Err(Error::shape(op, "patch sides of at least 1", format!("{ph}×{pw}")));
    }
    if h < ph || w < pw {
        return Err(Error::shape(op, format!("images at least {ph}×{pw}"), format!("{images:?}")));
    }
    let total = crate::tensor::checked_numel(images).unwrap_or(usize::MAX);
    u32::try_from(total).map_err(|_| Error::invalid(op, format!("{total} elements exceed u32")))?;
    Ok(PatchParams {
        n: 0,
        channels: c as u32,
        height: h as u32,
        width: w as u32,
        ph: ph as u32,
        pw: pw as u32,
        gh: (h / ph) as u32,
        gw: (w / pw) as u32,
    })
}

/// Patch rows of `images` `[B, C, H, W]` for a `[ph, pw]` patch: `[B, gh·gw, C·ph·pw]` with
/// `gh = ⌊H/ph⌋`, `gw = ⌊W/pw⌋`, patches row-major and each row ordered `(c, kh, kw)` like a
/// PyTorch conv weight `[D, C, ph, pw]` flattened to `[D, C·ph·pw]`. Pixels past `gh·ph` or
/// `gw·pw` are dropped, as a strided conv drops them.
pub fn patchify(gpu: &Gpu, images: &Tensor, patch: [usize; 2]) -> Result<Tensor> {
    let mut params = params("patchify", images.shape(), patch)?;
    if images.dtype() != DType::F32 {
        return Err(Error::shape("patchify", "f32 images", format!("{images:?}")));
    }
    let (b, c) = (images.shape()[0], images.shape()[1]);
    let shape = [b, (params.gh * params.gw) as usize, c * patch[0] * patch[1]];
    let y = Tensor::uninit(gpu, &shape, DType::F32)?;
    params.n = y.len() as u32;
    gpu.dispatch_1d(Kernel::Patchify, &[images], &[&y], &params, y.len())?;
    Ok(y)
}

/// The adjoint of [`patchify`] (col2im without overlap): images of shape `image_shape`
/// where each pixel takes its one entry of `rows`, and pixels no patch reads are 0.
pub fn unpatchify(gpu: &Gpu, rows: &Tensor, image_shape: &[usize], patch: [usize; 2]) -> Result<Tensor> {
    let mut params = params("unpatchify", image_shape, patch)?;
    let (b, c) = (image_shape[0], image_shape[1]);
    let expected = [b, (params.gh * params.gw) as usize, c * patch[0] * patch[1]];
    if rows.shape() != expected || rows.dtype() != DType::F32 {
        return Err(Error::shape("unpatchify", format!("f32 rows of shape {expected:?}"), format!("{rows:?}")));
    }
    let y = Tensor::uninit(gpu, image_shape, DType::F32)?;
    params.n = y.len() as u32;
    gpu.dispatch_1d(Kernel::Unpatchify, &[rows], &[&y], &params, y.len())?;
    Ok(y)
}

/// Tape op [`patchify`]; backward [`unpatchify`].
pub fn patchify_var(tape: &mut Tape, images: &Var, patch: [usize; 2]) -> Result<Var> {
    let y = patchify(tape.gpu(), images.value(), patch)?;
    let shape = images.shape().to_vec();
    Ok(tape.push(y, &[images], move |gpu, g| Ok(vec![Some(unpatchify(gpu, g, &shape, patch)?)])))
}

/// ViT patch embedding: the conv `images [B, C, H, W] ⊛ w [D, C, ph, pw] + b` with stride
/// `(ph, pw)`, as tokens `[B, gh·gw, D]` (patches row-major), computed as
/// `patchify(images) · w'ᵀ + b` with `w' = w` viewed `[D, C·ph·pw]`.
///
/// Backward through [`patchify_var`], [`reshape_var`] and [`linear_var`]: `∂w = ∂yᵀ·patches`
/// (saved only when `w` is trained), `∂b = Σ ∂y`, `∂images = unpatchify(∂y·w')` (only when
/// the images need a gradient, which they usually do not).
pub fn patch_embed(tape: &mut Tape, images: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let &[d, c, ph, pw] = w.shape() else {
        return Err(Error::shape("patch_embed", "a weight [D, C, ph, pw]", format!("{:?}", w.shape())));
    };
    if images.shape().len() != 4 {
        return Err(Error::shape("patch_embed", "images [B, C, H, W]", format!("{:?}", images.shape())));
    }
    if images.shape().get(1) != Some(&c) {
        return Err(Error::shape(
            "patch_embed",
            format!("images with {c} channels"),
            format!("weight {:?}, images {:?}", w.shape(), images.shape()),
        ));
    }
    let rows = patchify_var(tape, images, [ph, pw])?;
    let w2 = reshape_var(tape, w, &[d, c * ph * pw])?;
    linear_var(tape, &rows, &w2, b)
}
