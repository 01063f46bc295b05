//! FLoRA on any 2-D convolution (SPEC §5): a frozen conv whose weight `W` `[out, in/groups,
//! kh, kw]` is adapted by `ΔW = scale · G ×₁ U₁ ×₂ U₂ ×₃ U₃ ×₄ U₄`. The modes are the weight's
//! own axes, so grouped and depthwise convs use `in/groups` as the second mode.

use super::config::FloraRank;
use super::flora::{flora_delta, flora_delta_var, ranks};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::HostTensor;
use crate::ops::conv::{Conv2dSpec, conv2d_var};
use crate::ops::elementwise::add_var;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

/// A convolution `y = conv2d(x, W + ΔW, b)` (stride, padding, groups as PyTorch's `Conv2d`)
/// with a frozen base `W`, `b` and a trainable FLoRA core `G` `[r₁, r₂, r₃, r₄]` and factors
/// `U_i` `[d_i, r_i]`, `(d₁, d₂, d₃, d₄) = (out, in/groups, kh, kw)`.
///
/// Gradients reach `G`, every `U_i` and the input through `ΔW` (see [`flora_delta_var`]) and
/// [`conv2d_var`]; the base weight and bias never get one.
#[derive(Clone, Debug)]
pub struct FloraConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    spec: Conv2dSpec,
    scale: f32,
    core: Tensor,
    factors: Vec<Tensor>,
}

/// A [`FloraConv2d`]'s tensors on one tape: the core and factors as trainable leaves, the
/// base weight and bias as constants.
#[derive(Clone, Debug)]
pub struct BoundFloraConv2d {
    core: Var,
    factors: Vec<Var>,
    weight: Var,
    bias: Option<Var>,
}

impl BoundFloraConv2d {
    /// The core on the tape.
    pub fn core(&self) -> &Var {
        &self.core
    }

    /// The factors on the tape, `U₁ … U₄`.
    pub fn factors(&self) -> &[Var] {
        &self.factors
    }
}

impl FloraConv2d {
    /// A fresh adapter on the frozen conv `weight` `[out, in/groups, kh, kw]` (and `bias`
    /// `[out]`): core `G = 0` of ranks `r` (`r_i = min(r, d_i)` for one rank), factors
    /// `U_i ~ N(0, 1/(2 r_i))` drawn from `rng` in mode order.
    pub fn new(
        gpu: &Gpu,
        weight: Tensor,
        bias: Option<Tensor>,
        spec: Conv2dSpec,
        r: &FloraRank,
        scale: f32,
        rng: &mut Rng,
    ) -> Result<FloraConv2d> {
        gpu.check_owns("FLoRA conv", std::iter::once(&weight).chain(&bias))?;
        let dims = modes_of(&weight)?;
        let ranks = ranks(r, &dims).map_err(|m| Error::invalid("FLoRA conv rank", m))?;
        if ranks.contains(&0) {
            return Err(Error::invalid("FLoRA conv rank", format!("ranks {ranks:?} must be at least 1")));
        }
        let core = Tensor::zeros(gpu, &ranks)?;
        let factors = dims
            .iter()
            .zip(&ranks)
            .map(|(&d, &k)| Tensor::from_slice(gpu, &rng.normal_vec(d * k, 0.0, (0.5 / k as f64).sqrt()), &[d, k]))
            .collect::<Result<Vec<_>>>()?;
        FloraConv2d::from_parts(weight, bias, spec, core, factors, scale)
    }

    /// An adapter from existing tensors; shapes are checked against the weight's modes, and
    /// every tensor must be f32 (their device is checked by the first forward pass).
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        spec: Conv2dSpec,
        core: Tensor,
        factors: Vec<Tensor>,
        scale: f32,
    ) -> Result<FloraConv2d> {
        if !scale.is_finite() {
            return Err(Error::invalid("FLoRA conv scale", format!("{scale} is not a finite number")));
        }
        let all = std::iter::once(&weight).chain(&bias).chain(std::iter::once(&core)).chain(&factors);
        if let Some(t) = all.into_iter().find(|t| t.dtype() != DType::F32) {
            return Err(Error::invalid(
                "FLoRA conv",
                format!("tensors must be f32, got {:?} {:?}", t.dtype(), t.shape()),
            ));
        }
        let dims = modes_of(&weight)?;
        if spec.groups == 0 || !dims[0].is_multiple_of(spec.groups) {
            return Err(Error::invalid(
                "FLoRA conv",
                format!("groups {} must divide the {} output channels", spec.groups, dims[0]),
            ));
        }
        if let Some(b) = &bias
            && b.shape() != [dims[0]]
        {
            return Err(Error::shape("FLoRA conv bias", format!("[{}]", dims[0]), format!("{b:?}")));
        }
        let ranks = core.shape().to_vec();
        let expected: Vec<Vec<usize>> = dims.iter().zip(&ranks).map(|(&d, &r)| vec![d, r]).collect();
        let got: Vec<&[usize]> = factors.iter().map(Tensor::shape).collect();
        if ranks.len() != 4 || got != expected {
            return Err(Error::shape(
                "FLoRA conv",
                format!("a 4-mode core and factors [d_i, r_i] for modes {dims:?}"),
                format!("core {ranks:?}, factors {got:?}"),
            ));
        }
        Ok(FloraConv2d { weight, bias, spec, scale, core, factors })
    }

    /// The modes `(out, in/groups, kh, kw)`: the base weight's shape.
    pub fn modes(&self) -> &[usize] {
        self.weight.shape()
    }

    /// The core's ranks `(r₁, r₂, r₃, r₄)`.
    pub fn ranks(&self) -> &[usize] {
        self.core.shape()
    }

    /// Stride, padding and groups.
    pub fn spec(&self) -> Conv2dSpec {
        self.spec
    }

    /// The multiplier of `ΔW`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The frozen base weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The frozen base bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The trainable tensors, core first then `U₁ … U₄` (the order of an optimizer's list
    /// and of [`BoundFloraConv2d`]).
    pub fn trainable(&self) -> Vec<Tensor> {
        std::iter::once(&self.core).chain(&self.factors).cloned().collect()
    }

    /// Puts the tensors on `tape`: core and factors trainable, the base frozen.
    pub fn bind(&self, tape: &mut Tape) -> BoundFloraConv2d {
        BoundFloraConv2d {
            core: tape.param(&self.core),
            factors: self.factors.iter().map(|f| tape.param(f)).collect(),
            weight: tape.constant(&self.weight),
            bias: self.bias.as_ref().map(|b| tape.constant(b)),
        }
    }

    /// `y = conv2d(x, W + ΔW, b)` for `x` `[B, in, H, W]`; `bound` must come from this
    /// layer's [`FloraConv2d::bind`].
    pub fn forward(&self, tape: &mut Tape, bound: &BoundFloraConv2d, x: &Var) -> Result<Var> {
        let ours = bound.core.value().same_buffer(&self.core)
            && bound.weight.value().same_buffer(&self.weight)
            && bound.factors.len() == self.factors.len()
            && bound.factors.iter().zip(&self.factors).all(|(v, t)| v.value().same_buffer(t));
        if !ours {
            return Err(Error::invalid(
                "FLoRA conv forward",
                "the tensors were bound from another layer (`FloraConv2d::bind`)",
            ));
        }
        let delta = flora_delta_var(tape, &bound.core, &bound.factors, self.scale)?;
        let w = add_var(tape, &bound.weight, &delta)?;
        conv2d_var(tape, x, &w, bound.bias.as_ref(), self.spec)
    }

    /// The merged weight `W + ΔW`, computed on the host in f64 and rounded once.
    pub fn merged_weight(&self, gpu: &Gpu) -> Result<HostTensor> {
        let host = |t: &Tensor| HostTensor::new(t.shape().to_vec(), gpu.read(t)?);
        let factors = self.factors.iter().map(host).collect::<Result<Vec<_>>>()?;
        let delta = flora_delta(&host(&self.core)?, &factors, f64::from(self.scale));
        let mut w = host(&self.weight)?;
        for (x, d) in w.data.iter_mut().zip(delta) {
            *x = (f64::from(*x) + d) as f32;
        }
        Ok(w)
    }
}

fn modes_of(weight: &Tensor) -> Result<Vec<usize>> {
    match weight.shape() {
        s @ [_, _, _, _] if !s.contains(&0) => Ok(s.to_vec()),
        s => Err(Error::shape("FLoRA conv", "a weight [out, in/groups, kh, kw]", format!("{s:?}"))),
    }
}
