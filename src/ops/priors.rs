//! Physical-prior responses and the router of MoPPA (`shaders/priors.wgsl`), SPEC §3.
//!
//! Branches in the order heat, wave, poisson. On a `gh × gw` grid with
//! `ω²(n, m) = (nπ/gh)² + (mπ/gw)²`, channel `c = h·d + c'`:
//!
//! ```text
//! e_b[n, m, c] = ReLU(K_b[n, m, h] · T_b[c'])
//! g_heat = exp(−e ω²),  g_wave = cos(e ω²),  g_poisson = e
//! π[:, h] = softmax_b(logits[:, h] / τ[h])
//! r[n, m, c] = Σ_b π[b, h] · g_b[n, m, c]                 r: [gh, gw, C]
//! H = −mean_{b,h} π log(π + 1e-8)
//! ```
//!
//! ReLU's derivative at exactly 0 is taken as 0, as in PyTorch.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

/// Immediates of `shaders/priors.wgsl` (`PriorParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PriorParams {
    /// Grid height.
    pub gh: u32,
    /// Grid width.
    pub gw: u32,
    /// Heads (channel groups).
    pub heads: u32,
    /// Channels per head `d`.
    pub d: u32,
    /// Branch of a per-branch backward kernel: 0 heat, 1 wave, 2 poisson.
    pub branch: u32,
    /// Threads of a one-dimensional kernel.
    pub total: u32,
}

/// Sizes of one prior: grid `gh × gw`, `heads` heads of `d` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorDims {
    /// Grid height.
    pub gh: usize,
    /// Grid width.
    pub gw: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub d: usize,
}

impl PriorDims {
    fn params(&self, branch: u32, total: usize) -> PriorParams {
        let (gh, gw, heads, d) = (self.gh as u32, self.gw as u32, self.heads as u32, self.d as u32);
        PriorParams { gh, gw, heads, d, branch, total: total as u32 }
    }

    /// Grid cells times channels: the size of `r` (`usize::MAX` when that overflows, a size
    /// no buffer has).
    pub fn response_len(&self) -> usize {
        [self.gh, self.gw, self.heads, self.d].iter().try_fold(1usize, |a, &b| a.checked_mul(b)).unwrap_or(usize::MAX)
    }
}

fn router_dims(op: &'static str, logits: &Tensor, tau: &Tensor) -> Result<usize> {
    let heads = tau.len();
    if tau.shape() != [heads] || logits.shape() != [3, heads] || heads == 0 {
        return Err(Error::shape(op, "logits [3, heads] and τ [heads], heads ≥ 1", format!("{logits:?} and {tau:?}")));
    }
    if logits.dtype() != DType::F32 || tau.dtype() != DType::F32 {
        return Err(Error::shape(op, "f32 logits and τ", format!("{logits:?} and {tau:?}")));
    }
    Ok(heads)
}

fn prior_dims(k: [&Tensor; 3], t: [&Tensor; 3], logits: &Tensor, tau: &Tensor) -> Result<PriorDims> {
    let heads = router_dims("prior_response", logits, tau)?;
    let bad = || {
        Error::shape(
            "prior_response",
            format!("three f32 K [gh, gw, {heads}] and three f32 T [d], d ≥ 1"),
            format!("K {:?}, {:?}, {:?}; T {:?}, {:?}, {:?}", k[0], k[1], k[2], t[0], t[1], t[2]),
        )
    };
    let [gh, gw, h] = *k[0].shape() else { return Err(bad()) };
    let d = t[0].len();
    let same_k = k.iter().all(|x| x.shape() == k[0].shape() && x.dtype() == DType::F32);
    let same_t = t.iter().all(|x| x.shape() == [d] && x.dtype() == DType::F32);
    if h != heads || gh == 0 || gw == 0 || d == 0 || !same_k || !same_t {
        return Err(bad());
    }
    let dims = PriorDims { gh, gw, heads, d };
    if dims.response_len() > u32::MAX as usize {
        return Err(Error::invalid("prior_response", format!("{dims:?} has more than 2^32 responses")));
    }
    Ok(dims)
}

fn heads_params(heads: usize) -> PriorParams {
    PriorParams { heads: heads as u32, total: heads as u32, ..Default::default() }
}

/// Router probabilities `π[b, h] = softmax_b(logits[b, h] / τ[h])`, `[3, heads]`.
pub fn router_probs(gpu: &Gpu, logits: &Tensor, tau: &Tensor) -> Result<Tensor> {
    let heads = router_dims("router_probs", logits, tau)?;
    let probs = Tensor::uninit(gpu, &[3, heads], DType::F32)?;
    gpu.dispatch_1d(Kernel::RouterProbs, &[logits, tau], &[&probs], &heads_params(heads), heads)?;
    Ok(probs)
}

/// Route entropy `H = −mean_{b,h} π log(π + 1e-8)` as a `[1]` tensor.
pub fn route_entropy(gpu: &Gpu, logits: &Tensor, tau: &Tensor) -> Result<Tensor> {
    let heads = router_dims("route_entropy", logits, tau)?;
    let h = Tensor::uninit(gpu, &[1], DType::F32)?;
    gpu.dispatch(Kernel::RouteEntropy, &[logits, tau], &[&h], &heads_params(heads), [1, 1, 1])?;
    Ok(h)
}

/// [`route_entropy`] on the tape. Backward: `∂π_b = −∂H/(3·heads)·(log(π_b + 1e-8) +
/// π_b/(π_b + 1e-8))`, then through the softmax: `∂z = π ⊙ (∂π − Σ_b π ∂π)`, `∂logits = ∂z/τ`,
/// `∂τ = −Σ_b ∂z_b logits_b / τ²`. The training loss subtracts `λ_t · Σ_l H_l`; the caller
/// does that.
pub fn route_entropy_var(tape: &mut Tape, logits: &Var, tau: &Var) -> Result<Var> {
    let h = route_entropy(tape.gpu(), logits.value(), tau.value())?;
    let (l, t) = (logits.value().clone(), tau.value().clone());
    let need = [logits.requires_grad(), tau.requires_grad()];
    Ok(tape.push(h, &[logits, tau], move |gpu, g| {
        let (dl, dt) = router_backward(gpu, Kernel::RouteEntropyGrad, &l, &t, g)?;
        Ok(vec![need[0].then_some(dl), need[1].then_some(dt)])
    }))
}

fn router_backward(gpu: &Gpu, kernel: Kernel, logits: &Tensor, tau: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
    let heads = tau.len();
    let dl = Tensor::uninit(gpu, &[3, heads], DType::F32)?;
    let dt = Tensor::uninit(gpu, &[heads], DType::F32)?;
    gpu.dispatch_1d(kernel, &[logits, tau, up], &[&dl, &dt], &heads_params(heads), heads)?;
    Ok((dl, dt))
}

/// The mixed response `r = Σ_b π[b, h] · g_b`, `[gh, gw, heads·d]`, from `K_b` `[gh, gw, heads]`,
/// `T_b` `[d]` (both in branch order heat, wave, poisson), `logits` `[3, heads]`, `τ` `[heads]`.
pub fn prior_response(gpu: &Gpu, k: [&Tensor; 3], t: [&Tensor; 3], logits: &Tensor, tau: &Tensor) -> Result<Tensor> {
    let dims = prior_dims(k, t, logits, tau)?;
    let probs = router_probs(gpu, logits, tau)?;
    response_with(gpu, &dims, k, t, &probs)
}

fn response_with(gpu: &Gpu, dims: &PriorDims, k: [&Tensor; 3], t: [&Tensor; 3], probs: &Tensor) -> Result<Tensor> {
    let n = dims.response_len();
    let r = Tensor::uninit(gpu, &[dims.gh, dims.gw, dims.heads * dims.d], DType::F32)?;
    let inputs = [k[0], k[1], k[2], t[0], t[1], t[2], probs];
    gpu.dispatch_1d(Kernel::PriorResponse, &inputs, &[&r], &dims.params(0, n), n)?;
    Ok(r)
}

/// Gradients of the eight inputs of [`prior_response`].
#[derive(Clone, Debug)]
pub struct PriorGrads {
    /// `∂K_heat`, `∂K_wave`, `∂K_poisson`.
    pub k: [Tensor; 3],
    /// `∂T_heat`, `∂T_wave`, `∂T_poisson`.
    pub t: [Tensor; 3],
    /// `∂logits`.
    pub logits: Tensor,
    /// `∂τ`.
    pub tau: Tensor,
}

/// The gradients of `Σ r ⊙ ∂r` with respect to every input of [`prior_response`]; the rules
/// are those of [`prior_response_var`].
pub fn prior_response_grads(
    gpu: &Gpu,
    k: [&Tensor; 3],
    t: [&Tensor; 3],
    logits: &Tensor,
    tau: &Tensor,
    dr: &Tensor,
) -> Result<PriorGrads> {
    let dims = prior_dims(k, t, logits, tau)?;
    if dr.shape() != [dims.gh, dims.gw, dims.heads * dims.d] || dr.dtype() != DType::F32 {
        return Err(Error::shape("prior_response_grads", "∂r shaped like r", format!("{dr:?}")));
    }
    let probs = router_probs(gpu, logits, tau)?;
    let saved = Saved {
        dims,
        k: k.map(Tensor::clone),
        t: t.map(Tensor::clone),
        logits: logits.clone(),
        tau: tau.clone(),
        probs,
    };
    let mut g = saved.backward(gpu, dr, [true; 8])?.into_iter().map(|g| g.expect("every gradient was asked for"));
    let mut next = || g.next().expect("eight gradients");
    Ok(PriorGrads { k: [next(), next(), next()], t: [next(), next(), next()], logits: next(), tau: next() })
}

/// What the backward of the prior response needs.
struct Saved {
    dims: PriorDims,
    k: [Tensor; 3],
    t: [Tensor; 3],
    logits: Tensor,
    tau: Tensor,
    probs: Tensor,
}

impl Saved {
    /// Gradients in the order K ×3, T ×3, logits, τ; `None` where `need` is false.
    fn backward(&self, gpu: &Gpu, dr: &Tensor, need: [bool; 8]) -> Result<Vec<Option<Tensor>>> {
        let dims = &self.dims;
        // One invocation sums ∂K over a head's channels, one workgroup of 256 sums ∂T over the
        // grid and heads, and ∂π over the grid and a head's channels.
        let what = |of: &'static str| {
            move || format!("the MoPPA prior's {of} ({}×{} grid, {} heads of {})", dims.gh, dims.gw, dims.heads, dims.d)
        };
        let cells = dims.gh * dims.gw;
        if need[..3].iter().any(|&n| n) {
            gpu.check_loops(what("∂K"), dims.d)?;
        }
        if need[3..6].iter().any(|&n| n) {
            gpu.check_loops(what("∂T"), Gpu::row_loops(1, cells * dims.heads, 1))?;
        }
        if need[6] || need[7] {
            gpu.check_loops(what("router gradient"), Gpu::row_loops(1, cells * dims.d, 1))?;
        }
        let mut grads = vec![None; 8];
        for b in 0..3 {
            if !(need[b] || need[3 + b]) {
                continue;
            }
            let n = dims.response_len();
            let du = Tensor::uninit(gpu, &[n], DType::F32)?;
            let params = dims.params(b as u32, n);
            gpu.dispatch_1d(Kernel::PriorGradU, &[&self.k[b], &self.t[b], &self.probs, dr], &[&du], &params, n)?;
            if need[b] {
                let dk = Tensor::uninit(gpu, self.k[b].shape(), DType::F32)?;
                let cells = dk.len();
                let params = dims.params(b as u32, cells);
                gpu.dispatch_1d(Kernel::PriorGradK, &[&du, &self.t[b]], &[&dk], &params, cells)?;
                grads[b] = Some(dk);
            }
            if need[3 + b] {
                let dt = Tensor::uninit(gpu, &[dims.d], DType::F32)?;
                let grid = gpu.grid_1d(dims.d, 1);
                gpu.dispatch(Kernel::PriorGradT, &[&du, &self.k[b]], &[&dt], &dims.params(b as u32, 0), grid)?;
                grads[3 + b] = Some(dt);
            }
        }
        if need[6] || need[7] {
            let dprobs = Tensor::uninit(gpu, &[3, dims.heads], DType::F32)?;
            let grid = gpu.grid_1d(dims.heads, 1);
            for b in 0..3 {
                let params = dims.params(b as u32, 0);
                gpu.dispatch(Kernel::PriorGradProbs, &[&self.k[b], &self.t[b], dr], &[&dprobs], &params, grid)?;
            }
            let (dl, dtau) = router_backward(gpu, Kernel::RouterGrad, &self.logits, &self.tau, &dprobs)?;
            grads[6] = need[6].then_some(dl);
            grads[7] = need[7].then_some(dtau);
        }
        Ok(grads)
    }
}

/// [`prior_response`] on the tape, with gradients to all eight inputs (`K` ×3, `T` ×3,
/// `logits`, `τ`). Backward, per branch: `∂u_b = ∂r · π[b,h] · g_b'(e_b) · [K_b T_b > 0]`,
/// `∂K_b = Σ_c' ∂u_b T_b`, `∂T_b = Σ_{n,m,h} ∂u_b K_b`, `∂π[b,h] = Σ_{n,m,c'} ∂r g_b`, then the
/// softmax backward of [`route_entropy_var`] from `∂π`. Saves the inputs (leaves, alive
/// anyway) and `π` (`[3, heads]`).
pub fn prior_response_var(tape: &mut Tape, k: [&Var; 3], t: [&Var; 3], logits: &Var, tau: &Var) -> Result<Var> {
    let gpu = tape.gpu().clone();
    let (kt, tt) = (k.map(|v| v.value().clone()), t.map(|v| v.value().clone()));
    let dims = prior_dims(kt.each_ref(), tt.each_ref(), logits.value(), tau.value())?;
    let probs = router_probs(&gpu, logits.value(), tau.value())?;
    let r = response_with(&gpu, &dims, kt.each_ref(), tt.each_ref(), &probs)?;
    let parents = [k[0], k[1], k[2], t[0], t[1], t[2], logits, tau];
    let need = parents.map(Var::requires_grad);
    let saved = Saved { dims, k: kt, t: tt, logits: logits.value().clone(), tau: tau.value().clone(), probs };
    Ok(tape.push(r, &parents, move |gpu, dr| saved.backward(gpu, dr, need)))
}

/// The gradients `(∂logits, ∂τ)` of `∂H · H` for the route entropy `H`, `∂H` a `[1]` tensor.
pub fn route_entropy_grads(gpu: &Gpu, logits: &Tensor, tau: &Tensor, dh: &Tensor) -> Result<(Tensor, Tensor)> {
    router_dims("route_entropy_grads", logits, tau)?;
    if dh.shape() != [1] || dh.dtype() != DType::F32 {
        return Err(Error::shape("route_entropy_grads", "f32 ∂H [1]", format!("{dh:?}")));
    }
    router_backward(gpu, Kernel::RouteEntropyGrad, logits, tau, dh)
}
