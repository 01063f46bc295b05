//! Optimizers: SGD and AdamW, each step one fused kernel dispatch over every parameter
//! (`shaders/optim.wgsl`).
//!
//! An [`Optimizer`] packs its parameters end to end into flat device buffers: parameters,
//! gradients and, for AdamW, the two moments. A step records, for each parameter that has a
//! gradient, a copy of the parameter and of its gradient into the flat buffers, then one
//! dispatch that updates all of them, then a copy of each updated parameter back into its
//! tensor. Parameters are updated in place, so every clone of a parameter tensor (the
//! model's, a [`Var`]'s value) sees the new values, and the tensors stay the
//! source of truth between steps. Gradients are only read. After construction a step
//! allocates no tensor and reads nothing back.
//!
//! Hyperparameters are `f64` and bias corrections are computed on the host in `f64`, as
//! PyTorch does with Python floats, then passed to the kernel in `f32`.
//!
//! ```no_run
//! use peft_wgpu::{Gpu, Optimizer, OptimizerKind, Tensor};
//! # fn main() -> peft_wgpu::Result<()> {
//! let gpu = Gpu::new()?;
//! let w = Tensor::zeros(&gpu, &[4, 3])?;
//! let mut opt = Optimizer::new(&gpu, OptimizerKind::adamw(), 1e-3, std::slice::from_ref(&w))?;
//! let g = Tensor::full(&gpu, &[4, 3], 0.5)?;
//! opt.step(&[Some(&g)])?; // w is updated in place
//! # Ok(()) }
//! ```

use crate::autograd::{Gradients, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

mod checkpoint;
mod kind;

pub use checkpoint::OptimizerCheckpoint;
pub use kind::OptimizerKind;
use kind::check_lr;

/// Immediates of `shaders/optim.wgsl` (`OptimParams` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptimParams {
    /// Elements in the flat buffers.
    pub n: u32,
    /// 0: every element uses `step_size` and `bc2_sqrt` below; otherwise the number of
    /// records in the segment table.
    pub segments: u32,
    /// SGD: `lr`; AdamW: `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// AdamW: `√(1 − β2^t)`.
    pub bc2_sqrt: f32,
    /// SGD: the coupled weight decay (0 when none); AdamW: `1 − lr·wd`.
    pub decay: f32,
    /// AdamW: `1 − β1`.
    pub one_minus_beta1: f32,
    /// AdamW: `β2`.
    pub beta2: f32,
    /// AdamW: `1 − β2`.
    pub one_minus_beta2: f32,
    /// AdamW: `ε`.
    pub eps: f32,
}

/// The error, for `what`, of settings whose step has a coefficient beyond f32's range.
fn overflow(what: &str, lr: f64, kind: &OptimizerKind) -> Error {
    Error::invalid(
        what,
        format!("learning rate {lr:e} with {kind} gives an update coefficient beyond f32's range; lower it"),
    )
}

/// One record of the segment table of `shaders/optim.wgsl` (`Segment` there): where a
/// parameter starts in the flat buffers, whether it is updated this step, and its own
/// coefficients.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Segment {
    /// First element of the parameter in the flat buffers.
    pub start: u32,
    /// 1 when the parameter has a gradient this step, 0 when it is left untouched.
    pub updated: u32,
    /// As [`OptimParams::step_size`], for this parameter's step count.
    pub step_size: f32,
    /// As [`OptimParams::bc2_sqrt`], for this parameter's step count.
    pub bc2_sqrt: f32,
}

/// AdamW's moment buffers.
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// An optimizer over a fixed list of parameter tensors, updated in place by [`step`](Self::step).
/// See the [module docs](self) for how a step runs.
pub struct Optimizer {
    /// Distinguishes this optimizer's checkpoints from those of every other.
    id: u64,
    gpu: Gpu,
    kind: OptimizerKind,
    lr: f64,
    params: Vec<Tensor>,
    starts: Vec<usize>,
    /// Updates applied to each parameter so far (PyTorch's per-parameter `step`).
    updates: Vec<u64>,
    steps: u64,
    n: usize,
    flat_param: Tensor,
    flat_grad: Tensor,
    moments: Option<Moments>,
    /// The segment table (`Segment` records), uploaded only in steps that need it.
    table: Tensor,
}

/// Ids of optimizers, unique in the process.
static NEXT_OPTIMIZER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Optimizer {
    /// An optimizer for `params` (f32 tensors, each at most once) with learning rate `lr`.
    /// Allocates the flat buffers (twice the parameters' size for SGD, four times for AdamW);
    /// the moments start at zero.
    pub fn new(gpu: &Gpu, kind: OptimizerKind, lr: f64, params: &[Tensor]) -> Result<Optimizer> {
        kind.validate()?;
        check_lr(lr)?;
        // AdamW's first step has the largest step size, `lr / (1 − β1)`, and the decay
        // `1 − lr·wd` is the same at every step: settings that overflow anywhere do so there.
        if !kind.fits(lr, 1) {
            return Err(overflow("optimizer settings", lr, &kind));
        }
        gpu.check_owns("optimizer parameters", params)?;
        let mut starts = Vec::with_capacity(params.len());
        let mut n = 0usize;
        for (j, p) in params.iter().enumerate() {
            if p.dtype() != DType::F32 {
                return Err(Error::shape("optimizer", "f32 parameters", format!("parameter {j}: {p:?}")));
            }
            if let Some(k) = params[..j].iter().position(|q| q.same_buffer(p)) {
                return Err(Error::invalid(
                    format!("optimizer parameter {j}"),
                    format!("it shares its buffer with parameter {k}; each parameter may appear once"),
                ));
            }
            starts.push(n);
            n += p.len();
        }
        if u32::try_from(n).is_err() {
            return Err(Error::invalid("optimizer parameters", format!("{n} elements in all, more than 2^32 - 1")));
        }
        // One flat buffer holds all the parameters (and each of their gradients and moments).
        let (max, limit) = gpu.max_tensor_bytes();
        let bytes = 4 * n as u64;
        if bytes > max {
            let what = format!(
                "the optimizer's flat buffer of all {n} trainable values (of {} tensors; train fewer or smaller)",
                params.len()
            );
            return Err(Error::TooLarge { what, bytes, limit, max });
        }
        let moments = match kind {
            OptimizerKind::Sgd { .. } => None,
            OptimizerKind::AdamW { .. } => {
                Some(Moments { exp_avg: Tensor::zeros(gpu, &[n])?, exp_avg_sq: Tensor::zeros(gpu, &[n])? })
            }
        };
        let table = Tensor::uninit(gpu, &[4 * params.len().max(1)], DType::U32)?;
        gpu.clear(table.buffer());
        Ok(Optimizer {
            id: NEXT_OPTIMIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            gpu: gpu.clone(),
            kind,
            lr,
            params: params.to_vec(),
            starts,
            updates: vec![0; params.len()],
            steps: 0,
            n,
            flat_param: Tensor::zeros(gpu, &[n])?,
            flat_grad: Tensor::zeros(gpu, &[n])?,
            moments,
            table,
        })
    }

    /// The update rule.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// The learning rate the next step uses.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the following steps (for schedules).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        self.lr = lr;
        Ok(())
    }

    /// Steps taken so far (calls of [`step`](Self::step) that succeeded).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates applied to each parameter so far: a parameter without a gradient in a step is
    /// not updated and, for AdamW, keeps its step count `t` (PyTorch's `state["step"]`).
    pub fn updates(&self) -> &[u64] {
        &self.updates
    }

    /// The parameters, in the order given to [`new`](Self::new).
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// [`step`](Self::step) with the gradients of `vars` taken from `grads`, where `vars` are
    /// the tape's leaves of this optimizer's parameters, in their order ([`Tape::param`] of
    /// each, as an adapter's `bind_train(..).vars()` are for the tensors of its
    /// `trainable()`). A var that is not the leaf of the parameter at its place (another
    /// adapter's, two swapped, one missing) is an error and records nothing, where `step`,
    /// which matches gradients by position alone, would update one parameter with another's
    /// gradient of the same shape.
    ///
    /// [`Tape::param`]: crate::Tape::param
    pub fn step_vars<'v>(&mut self, grads: &Gradients, vars: impl IntoIterator<Item = &'v Var>) -> Result<()> {
        let vars: Vec<&Var> = vars.into_iter().collect();
        self.check_leaves(&vars)?;
        self.step(&grads.of(vars)?)
    }

    /// Fails unless `vars` are the tape's leaves of this optimizer's parameters, in their
    /// order (see [`step_vars`](Self::step_vars)).
    pub(crate) fn check_leaves(&self, vars: &[&Var]) -> Result<()> {
        if vars.len() != self.params.len() {
            return Err(Error::invalid(
                "optimizer step",
                format!(
                    "{} variables for {} parameters; give the leaf of each, in order",
                    vars.len(),
                    self.params.len()
                ),
            ));
        }
        for (j, (p, v)) in self.params.iter().zip(vars).enumerate() {
            if !v.value().same_buffer(p) || v.shape() != p.shape() {
                let at = self.params.iter().position(|q| v.value().same_buffer(q) && v.shape() == q.shape());
                let found = match at {
                    Some(k) => format!("the leaf of parameter {k}"),
                    None => {
                        format!("no parameter's leaf (a value of shape {:?} this optimizer does not update)", v.shape())
                    }
                };
                return Err(Error::invalid(
                    format!("optimizer step, variable {j}"),
                    format!("is {found}, not of parameter {j}; give the vars in the order of the parameters"),
                ));
            }
        }
        Ok(())
    }

    /// Records one step: each parameter with a gradient (same order as the parameters, each
    /// of its parameter's shape; `None` leaves a parameter, its moments and its step count
    /// unchanged) is updated in place. Gradients are matched to parameters by position only;
    /// [`step_vars`](Self::step_vars) checks that each comes from its parameter's leaf. Records copies and one kernel dispatch; allocates no
    /// tensor and waits for nothing. A mismatch is an [`Error::Shape`] and records nothing.
    ///
    /// A tape that recorded an updated parameter before this step refuses its backward pass
    /// (its ops saved the old values): step after the backward pass, or record again.
    ///
    /// When every parameter has a gradient and (for AdamW) all share one step count, the
    /// kernel's coefficients travel as immediates. Otherwise a table of 16 bytes per parameter
    /// (which ones to update, each one's bias corrections) is uploaded first.
    pub fn step(&mut self, grads: &[Option<&Tensor>]) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::shape(
                "optimizer step",
                format!("{} gradients, one per parameter", self.params.len()),
                grads.len().to_string(),
            ));
        }
        for (j, (p, g)) in self.params.iter().zip(grads).enumerate() {
            if let Some(g) = g.filter(|g| g.shape() != p.shape() || g.dtype() != DType::F32) {
                return Err(Error::shape(
                    "optimizer step",
                    format!("gradient {j} as an f32 tensor of shape {:?}", p.shape()),
                    format!("{g:?}"),
                ));
            }
        }
        self.gpu.check_owns("optimizer gradients", grads.iter().flatten().copied())?;
        if grads.iter().all(Option::is_none) {
            self.steps += 1;
            return Ok(());
        }
        let updates: Vec<u64> = self.updates.iter().zip(grads).map(|(&t, g)| t + u64::from(g.is_some())).collect();
        let same_counts = matches!(self.kind, OptimizerKind::Sgd { .. }) || updates.iter().all(|&t| t == updates[0]);
        let uniform = same_counts && grads.iter().all(Option::is_some);
        let (step_size, bc2_sqrt) = self.coefficients(updates[0]);
        let mut params = self.params_for(step_size, bc2_sqrt);
        // Each setting is within f32's range, but what the step derives from them may not be
        // (`1 − lr·weight_decay`, `lr / (1 − β1^t)`): an update by an infinity is refused.
        if !self.kind.fits(self.lr, updates[0]) {
            return Err(self.overflow());
        }
        if !uniform {
            let table: Vec<Segment> = (0..self.params.len())
                .map(|j| {
                    let (step_size, bc2_sqrt) = self.coefficients(updates[j]);
                    Segment {
                        start: self.starts[j] as u32,
                        updated: u32::from(grads[j].is_some()),
                        step_size: step_size as f32,
                        bc2_sqrt: bc2_sqrt as f32,
                    }
                })
                .collect();
            if !table.iter().all(|s| s.step_size.is_finite() && s.bc2_sqrt.is_finite()) {
                return Err(self.overflow());
            }
            self.gpu.upload(bytemuck::cast_slice(&table), self.table.buffer());
            params.segments = table.len() as u32;
        }
        // Another thread's step over the same tensors must not fall between the copy in and
        // the copy out, or its update would be overwritten.
        self.gpu.updating(|| -> Result<()> {
            for ((p, g), &start) in self.params.iter().zip(grads).zip(&self.starts) {
                if let Some(g) = g {
                    self.gpu.copy(p, 0, &self.flat_param, start, p.len());
                    self.gpu.copy(g, 0, &self.flat_grad, start, g.len());
                }
            }
            let inputs = [&self.flat_grad, &self.table];
            match &self.moments {
                None => self.gpu.dispatch_1d(Kernel::SgdStep, &inputs, &[&self.flat_param], &params, self.n)?,
                Some(m) => self.gpu.dispatch_1d(
                    Kernel::AdamwStep,
                    &inputs,
                    &[&self.flat_param, &m.exp_avg, &m.exp_avg_sq],
                    &params,
                    self.n,
                )?,
            }
            for ((p, g), &start) in self.params.iter().zip(grads).zip(&self.starts) {
                if g.is_some() {
                    self.gpu.copy(&self.flat_param, start, p, 0, p.len());
                    p.mark_changed();
                }
            }
            Ok(())
        })?;
        self.updates = updates;
        self.steps += 1;
        Ok(())
    }

    /// The error of a step whose coefficients are beyond f32's range.
    fn overflow(&self) -> Error {
        overflow("optimizer step", self.lr, &self.kind)
    }

    /// Step size and `√bc2` in f64 for a parameter at its `t`-th update.
    fn coefficients(&self, t: u64) -> (f64, f64) {
        self.kind.coefficients(self.lr, t)
    }

    /// The kernel's immediates for a step in which every parameter uses these coefficients.
    fn params_for(&self, step_size: f64, bc2_sqrt: f64) -> OptimParams {
        let mut p = OptimParams {
            n: self.n as u32,
            segments: 0,
            step_size: step_size as f32,
            bc2_sqrt: bc2_sqrt as f32,
            ..Default::default()
        };
        p.decay = self.kind.decay(self.lr) as f32;
        match self.kind {
            OptimizerKind::Sgd { .. } => {}
            OptimizerKind::AdamW { beta1, beta2, eps, .. } => {
                p.one_minus_beta1 = (1.0 - beta1) as f32;
                p.beta2 = beta2 as f32;
                p.one_minus_beta2 = (1.0 - beta2) as f32;
                p.eps = eps as f32;
            }
        }
        p
    }
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("kind", &self.kind)
            .field("lr", &self.lr)
            .field("params", &self.params.len())
            .field("elements", &self.n)
            .field("steps", &self.steps)
            .finish()
    }
}
