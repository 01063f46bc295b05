//! FLoRA (SPEC §5): `ΔW = scale · G ×₁ U₁ ×₂ U₂ … ×_N U_N` for a weight with modes
//! `(d₁, …, d_N)` in PyTorch order, so a conv kernel keeps its 4-D structure. Linear layers use
//! the factored form `scale·((x U₂) Gᵀ) U₁ᵀ` and never build `ΔW`.

pub use super::flora_conv::{BoundFloraConv2d, FloraConv2d};

use super::Build;
use super::config::{FloraConfig, FloraRank};
use super::params::Slot;
use super::source::Init;
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::io::safetensors::HostTensor;
use crate::nn::weights::module_shapes;
use crate::nn::{ModuleId, Naming};
use crate::ops::elementwise::add_var;
use crate::ops::linear::linear_var;
use crate::ops::matmul::{MatmulSpec, matmul_var};
use crate::ops::patch::patch_embed as base_patch_embed;
use crate::ops::shape::{permute_var, reshape_var};

/// One adapted module.
#[derive(Clone, Debug)]
pub(crate) struct FloraModule {
    pub(crate) module: ModuleId,
    pub(crate) core: Slot,
    pub(crate) factors: Vec<Slot>,
    pub(crate) scale: f32,
}

/// The ranks of a weight with modes `dims` under `r`; an error naming `r` when a per-mode
/// list has the wrong length.
pub fn ranks(r: &FloraRank, dims: &[usize]) -> std::result::Result<Vec<usize>, String> {
    match r {
        FloraRank::Uniform(r) => Ok(dims.iter().map(|&d| (*r).min(d)).collect()),
        FloraRank::PerMode(list) if list.len() == dims.len() => Ok(list.clone()),
        FloraRank::PerMode(list) => {
            Err(format!("lists {} ranks but the weight has {} modes {dims:?}", list.len(), dims.len()))
        }
    }
}

/// Resolves the targets and creates (or reads) the core and factors of each.
pub(crate) fn build(cfg: &FloraConfig, build: &mut Build<'_>) -> Result<Vec<FloraModule>> {
    let layers = build.model.num_hidden_layers;
    let mut modules = Vec::new();
    build.check_target_kinds(&cfg.target_modules)?;
    for (module, matched) in cfg.target_modules.resolve(layers, build.config_path)? {
        if build.saved.contains(&module) {
            continue;
        }
        let (dims, _) = module_shapes(build.model, module);
        let ranks = ranks(&cfg.r, &dims).map_err(|m| Error::Config {
            path: build.config_path.to_path_buf(),
            key: "r".into(),
            message: format!("{m} (module {})", module.path(matched)),
        })?;
        let named_under = |n: Naming| cfg.target_modules.matches_under(module, n);
        let Some(stem) = build.module_stem(module, named_under, "flora_core", None)? else { continue };
        let core = build.trainable(&format!("{stem}.flora_core"), &ranks, Init::Zeros)?;
        let factors = dims
            .iter()
            .zip(&ranks)
            .enumerate()
            .map(|(i, (&d, &r))| {
                let init = Init::Normal { mean: 0.0, std: (1.0 / (2.0 * r as f64)).sqrt() };
                build.trainable(&format!("{stem}.flora_factors.{i}"), &[d, r], init)
            })
            .collect::<Result<Vec<_>>>()?;
        modules.push(FloraModule { module, core, factors, scale: cfg.scale as f32 });
    }
    build.require_adapted(modules.len(), None, "modules_to_save")?;
    Ok(modules)
}

/// `x Wᵀ + b + scale·((x U₂) Gᵀ) U₁ᵀ`.
pub(crate) fn linear(
    tape: &mut Tape,
    m: &FloraModule,
    core: &Var,
    factors: &[Var],
    x: &Var,
    w: &Var,
    bias: Option<&Var>,
) -> Result<Var> {
    let base = linear_var(tape, x, w, bias)?;
    let h = matmul_var(tape, x, &factors[1], MatmulSpec::new(), None, None)?;
    let h = matmul_var(tape, &h, core, MatmulSpec::new().transpose_b(), None, None)?;
    matmul_var(tape, &h, &factors[0], MatmulSpec::new().transpose_b().scaled(m.scale), None, Some(&base))
}

/// The order in which to multiply the modes of a core of shape `ranks` by factors with
/// `dims` rows: first the modes whose rank exceeds their size (each shrinks the running
/// tensor), then the rest in order, so no intermediate is larger than the core or `ΔW`.
fn mode_order(ranks: &[usize], dims: impl Iterator<Item = usize>) -> Vec<usize> {
    let dims: Vec<usize> = dims.collect();
    let (shrinking, rest): (Vec<usize>, Vec<usize>) = (0..ranks.len()).partition(|&i| ranks[i] > dims[i]);
    shrinking.into_iter().chain(rest).collect()
}

/// `scale · G ×₁ U₁ … ×_N U_N` on the tape, for any number of modes.
///
/// The modes whose rank exceeds their size go first (each shrinks the running tensor), so no
/// intermediate is larger than the core or `ΔW`. Mode `i`: move axis `i` of the running
/// tensor to the front, flatten the rest, multiply by `U_i` on the left, and move the axis
/// back. Backward comes from the products and permutes.
pub fn flora_delta_var(tape: &mut Tape, core: &Var, factors: &[Var], scale: f32) -> Result<Var> {
    let n = core.shape().len();
    if n == 0 {
        return Err(Error::shape("FLoRA", "a core with at least one mode", "a core of shape []"));
    }
    if factors.len() != n {
        return Err(Error::shape("FLoRA", format!("{n} factors for a {n}-mode core"), format!("{}", factors.len())));
    }
    let order = mode_order(core.shape(), factors.iter().map(|u| u.shape().first().copied().unwrap_or(0)));
    let last = order[n - 1];
    let mut t = core.clone();
    for i in order {
        let u = &factors[i];
        let shape = t.shape().to_vec();
        let mut perm: Vec<usize> = (0..n).collect();
        perm.remove(i);
        perm.insert(0, i);
        let moved = if i == 0 { t.clone() } else { permute_var(tape, &t, &perm)? };
        let rest: usize = shape.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &d)| d).product();
        let flat = reshape_var(tape, &moved, &[shape[i], rest])?;
        let alpha = if i == last { scale } else { 1.0 };
        let prod = matmul_var(tape, u, &flat, MatmulSpec::new().scaled(alpha), None, None)?;
        let mut moved_shape: Vec<usize> = perm.iter().map(|&j| shape[j]).collect();
        moved_shape[0] = u.shape()[0];
        let prod = reshape_var(tape, &prod, &moved_shape)?;
        t = if i == 0 {
            prod
        } else {
            let mut inverse = vec![0; n];
            for (dst, &src) in perm.iter().enumerate() {
                inverse[src] = dst;
            }
            permute_var(tape, &prod, &inverse)?
        };
    }
    Ok(t)
}

/// The patch-embedding conv with `W + ΔW`.
pub(crate) fn patch_embed(
    tape: &mut Tape,
    m: &FloraModule,
    core: &Var,
    factors: &[Var],
    images: &Var,
    w: &Var,
    bias: &Var,
) -> Result<Var> {
    let delta = flora_delta_var(tape, core, factors, m.scale)?;
    let w = add_var(tape, w, &delta)?;
    base_patch_embed(tape, images, &w, Some(bias))
}

/// `scale · G ×₁ U₁ … ×_N U_N` on the host in f64.
pub(crate) fn flora_delta(core: &HostTensor, factors: &[HostTensor], scale: f64) -> Vec<f64> {
    let mut shape = core.shape.clone();
    let mut t: Vec<f64> = core.data.iter().map(|&v| f64::from(v)).collect();
    for i in mode_order(&core.shape, factors.iter().map(|u| u.shape[0])) {
        let u = &factors[i];
        let (d, r) = (u.shape[0], u.shape[1]);
        let outer: usize = shape[..i].iter().product();
        let inner: usize = shape[i + 1..].iter().product();
        let mut next = vec![0.0; outer * d * inner];
        for o in 0..outer {
            for a in 0..d {
                for k in 0..r {
                    let w = f64::from(u.data[a * r + k]);
                    if w == 0.0 {
                        continue;
                    }
                    let src = &t[(o * r + k) * inner..(o * r + k + 1) * inner];
                    let dst = &mut next[(o * d + a) * inner..(o * d + a + 1) * inner];
                    for (x, y) in dst.iter_mut().zip(src) {
                        *x += w * y;
                    }
                }
            }
        }
        shape[i] = d;
        t = next;
    }
    t.iter_mut().for_each(|v| *v *= scale);
    t
}

/// `W ← W + ΔW`.
pub(crate) fn merge(m: &FloraModule, core: &HostTensor, factors: &[HostTensor], w: &mut HostTensor) {
    let delta = flora_delta(core, factors, f64::from(m.scale));
    for (x, d) in w.data.iter_mut().zip(delta) {
        *x = (f64::from(*x) + d) as f32;
    }
}
