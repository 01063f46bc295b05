//! The update rules and their hyperparameters, checked before any buffer is made.

use crate::error::{Error, Result};

/// The update rule and its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Stochastic gradient descent as `torch.optim.SGD` without momentum:
    /// `g ← g + wd·p` only when `weight_decay` is given, then `p ← p − lr·g`.
    Sgd {
        /// Coupled (L2) weight decay `wd ≥ 0`, or none.
        weight_decay: Option<f64>,
    },
    /// AdamW exactly as `torch.optim.AdamW` (no amsgrad), with decoupled weight decay and each
    /// parameter's own step count `t` (a parameter skipped in a step does not advance it):
    /// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
    /// `p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)`.
    AdamW {
        /// Decay of the first moment, in `[0, 1)`.
        beta1: f64,
        /// Decay of the second moment, in `[0, 1)`.
        beta2: f64,
        /// Added to the denominator, `≥ 0` as in PyTorch; with 0, an element whose gradient
        /// has always been 0 (LoRA's `A` at the first step, while `B` is 0) becomes NaN (0/0),
        /// which `train` reports as a divergence.
        eps: f64,
        /// Decoupled weight decay, `≥ 0`.
        weight_decay: f64,
    },
}

impl OptimizerKind {
    /// Plain SGD: no weight decay.
    pub const fn sgd() -> Self {
        OptimizerKind::Sgd { weight_decay: None }
    }

    /// AdamW with PyTorch's defaults: β1 = 0.9, β2 = 0.999, ε = 1e-8, weight decay 0.01.
    pub const fn adamw() -> Self {
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }

    pub(super) fn validate(&self) -> Result<()> {
        // The kernel computes in f32: a value beyond f32's range would turn every parameter
        // into an infinity.
        let check = |what: &str, value: f64, ok: bool, range: &str| {
            if ok && value.is_finite() && (value as f32).is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("optimizer {what}"),
                    format!("{value:e} is not a number {range} within f32's range"),
                ))
            }
        };
        match *self {
            OptimizerKind::Sgd { weight_decay: None } => Ok(()),
            OptimizerKind::Sgd { weight_decay: Some(wd) } => check("weight decay", wd, wd >= 0.0, "≥ 0"),
            OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                check("beta1", beta1, (0.0..1.0).contains(&beta1), "in [0, 1)")?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2), "in [0, 1)")?;
                check("eps", eps, eps >= 0.0, "≥ 0")?;
                check("weight decay", weight_decay, weight_decay >= 0.0, "≥ 0")
            }
        }
    }
}

impl OptimizerKind {
    /// Step size and `√bc2` in f64 at learning rate `lr` for a parameter at its `t`-th
    /// update (zero step for `t = 0`, a parameter never updated).
    pub(super) fn coefficients(&self, lr: f64, t: u64) -> (f64, f64) {
        match *self {
            _ if t == 0 => (0.0, 1.0),
            OptimizerKind::Sgd { .. } => (lr, 1.0),
            OptimizerKind::AdamW { beta1, beta2, .. } => {
                let t = t as f64;
                (lr / (1.0 - beta1.powf(t)), (1.0 - beta2.powf(t)).sqrt())
            }
        }
    }

    /// Whether every coefficient a step at learning rate `lr` derives from the settings for
    /// a parameter at its `t`-th update is within f32's range, which the kernel computes in.
    pub(super) fn fits(&self, lr: f64, t: u64) -> bool {
        let (step_size, bc2_sqrt) = self.coefficients(lr, t);
        [step_size, bc2_sqrt, self.decay(lr)].iter().all(|&c| (c as f32).is_finite())
    }

    /// The decay coefficient of every step at learning rate `lr`: SGD's coupled weight decay
    /// (0 when none), AdamW's `1 − lr·wd`.
    pub(super) fn decay(&self, lr: f64) -> f64 {
        match *self {
            OptimizerKind::Sgd { weight_decay } => weight_decay.unwrap_or(0.0),
            OptimizerKind::AdamW { weight_decay, .. } => 1.0 - lr * weight_decay,
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    /// `SGD` with its weight decay, if any; `AdamW` with its four settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            OptimizerKind::Sgd { weight_decay: None } => f.write_str("SGD"),
            OptimizerKind::Sgd { weight_decay: Some(wd) } => write!(f, "SGD (weight decay {wd})"),
            OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                write!(f, "AdamW (betas {beta1}, {beta2}; eps {eps:e}; weight decay {weight_decay})")
            }
        }
    }
}

pub(super) fn check_lr(lr: f64) -> Result<()> {
    if lr >= 0.0 && (lr as f32).is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("learning rate", format!("{lr} is not a number ≥ 0 within f32's range")))
    }
}
