//! Twins of `shaders/optim.wgsl`: one parameter's update, from the textbook formulas.

/// SGD: `g ← g + wd·p` when `weight_decay` is given, then `p ← p − lr·g`.
pub fn sgd_step(p: &mut [f64], g: &[f64], lr: f64, weight_decay: Option<f64>) {
    for (p, &g) in p.iter_mut().zip(g) {
        let g = g + weight_decay.unwrap_or(0.0) * *p;
        *p -= lr * g;
    }
}

/// AdamW's hyperparameters for [`adamw_step`].
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// AdamW (Loshchilov & Hutter) at the parameter's `t`-th update (`t ≥ 1`):
/// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
/// `m̂ = m / (1 − β1^t)`, `v̂ = v / (1 − β2^t)`, `p ← p − lr·m̂ / (√v̂ + ε)`.
pub fn adamw_step(h: &AdamW, t: u64, p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64]) {
    let t = t as f64;
    let (bc1, bc2) = (1.0 - h.beta1.powf(t), 1.0 - h.beta2.powf(t));
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *p *= 1.0 - h.lr * h.weight_decay;
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        let (m_hat, v_hat) = (*m / bc1, *v / bc2);
        *p -= h.lr * m_hat / (v_hat.sqrt() + h.eps);
    }
}
