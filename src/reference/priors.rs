//! Twins of `shaders/priors.wgsl`: prior responses, the router and the route entropy, with
//! their analytic gradients, in f64.

use std::f64::consts::PI;

const EPS_LOG: f64 = 1e-8;

/// The trainable inputs of one MoPPA prior (or, from [`prior_response_grads`], their
/// gradients): `K_b` `[gh, gw, heads]`, `T_b` `[d]` in branch order heat, wave, poisson,
/// `logits` `[3, heads]`, `tau` `[heads]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Prior {
    /// Grid height.
    pub gh: usize,
    /// Grid width.
    pub gw: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub d: usize,
    /// `K_heat`, `K_wave`, `K_poisson`.
    pub k: [Vec<f64>; 3],
    /// `T_heat`, `T_wave`, `T_poisson`.
    pub t: [Vec<f64>; 3],
    /// Router logits.
    pub logits: Vec<f64>,
    /// Router temperatures.
    pub tau: Vec<f64>,
}

/// `ω²` of grid cell `pos = n·gw + m`: `(nπ/gh)² + (mπ/gw)²`.
pub fn omega2(pos: usize, gh: usize, gw: usize) -> f64 {
    let a = (pos / gw) as f64 * PI / gh as f64;
    let b = (pos % gw) as f64 * PI / gw as f64;
    a * a + b * b
}

/// `g_b(e)` and `g_b'(e)` at frequency `w2`.
fn response(branch: usize, e: f64, w2: f64) -> (f64, f64) {
    match branch {
        0 => ((-e * w2).exp(), -w2 * (-e * w2).exp()),
        1 => ((e * w2).cos(), -w2 * (e * w2).sin()),
        _ => (e, 1.0),
    }
}

/// `π[b, h] = softmax_b(logits[b, h] / τ[h])`, `[3, heads]`.
pub fn router_probs(logits: &[f64], tau: &[f64]) -> Vec<f64> {
    let heads = tau.len();
    let mut pi = vec![0.0; 3 * heads];
    for h in 0..heads {
        let z: Vec<f64> = (0..3).map(|b| logits[b * heads + h] / tau[h]).collect();
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        for b in 0..3 {
            pi[b * heads + h] = (z[b] - max).exp() / sum;
        }
    }
    pi
}

/// `H = −mean_{b,h} π log(π + 1e-8)`.
pub fn route_entropy(logits: &[f64], tau: &[f64]) -> f64 {
    let pi = router_probs(logits, tau);
    -pi.iter().map(|p| p * (p + EPS_LOG).ln()).sum::<f64>() / pi.len() as f64
}

/// `(∂logits, ∂τ)` from `∂π` through the softmax of `logits / τ`.
pub fn router_grad(logits: &[f64], tau: &[f64], dpi: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let heads = tau.len();
    let pi = router_probs(logits, tau);
    let (mut dl, mut dt) = (vec![0.0; 3 * heads], vec![0.0; heads]);
    for h in 0..heads {
        let dot: f64 = (0..3).map(|b| pi[b * heads + h] * dpi[b * heads + h]).sum();
        for b in 0..3 {
            let i = b * heads + h;
            let dz = pi[i] * (dpi[i] - dot);
            dl[i] = dz / tau[h];
            dt[h] -= dz * logits[i] / (tau[h] * tau[h]);
        }
    }
    (dl, dt)
}

/// `(∂logits, ∂τ)` of `dh · H`.
pub fn route_entropy_grad(logits: &[f64], tau: &[f64], dh: f64) -> (Vec<f64>, Vec<f64>) {
    let pi = router_probs(logits, tau);
    let n = pi.len() as f64;
    let dpi: Vec<f64> = pi.iter().map(|&p| -dh / n * ((p + EPS_LOG).ln() + p / (p + EPS_LOG))).collect();
    router_grad(logits, tau, &dpi)
}

/// `r[pos, c] = Σ_b π[b, h] g_b(ReLU(K_b[pos, h] T_b[c']))`, `[gh·gw·heads·d]`.
pub fn prior_response(p: &Prior) -> Vec<f64> {
    let pi = router_probs(&p.logits, &p.tau);
    let ch = p.heads * p.d;
    let mut r = vec![0.0; p.gh * p.gw * ch];
    for (e, out) in r.iter_mut().enumerate() {
        let (pos, c) = (e / ch, e % ch);
        let (h, cc) = (c / p.d, c % p.d);
        let w2 = omega2(pos, p.gh, p.gw);
        *out = (0..3)
            .map(|b| pi[b * p.heads + h] * response(b, (p.k[b][pos * p.heads + h] * p.t[b][cc]).max(0.0), w2).0)
            .sum();
    }
    r
}

/// The gradients of `Σ r ⊙ dr` with respect to every input of [`prior_response`], in the
/// same layout (ReLU'(0) = 0).
pub fn prior_response_grads(p: &Prior, dr: &[f64]) -> Prior {
    let pi = router_probs(&p.logits, &p.tau);
    let ch = p.heads * p.d;
    let mut g = Prior {
        k: p.k.clone().map(|v| vec![0.0; v.len()]),
        t: p.t.clone().map(|v| vec![0.0; v.len()]),
        logits: vec![0.0; p.logits.len()],
        tau: vec![0.0; p.tau.len()],
        ..p.clone()
    };
    let mut dpi = vec![0.0; 3 * p.heads];
    for (e, &d) in dr.iter().enumerate() {
        let (pos, c) = (e / ch, e % ch);
        let (h, cc) = (c / p.d, c % p.d);
        let w2 = omega2(pos, p.gh, p.gw);
        for b in 0..3 {
            let kk = pos * p.heads + h;
            let u = p.k[b][kk] * p.t[b][cc];
            let (val, slope) = response(b, u.max(0.0), w2);
            dpi[b * p.heads + h] += d * val;
            if u > 0.0 {
                let du = d * pi[b * p.heads + h] * slope;
                g.k[b][kk] += du * p.t[b][cc];
                g.t[b][cc] += du * p.k[b][kk];
            }
        }
    }
    (g.logits, g.tau) = router_grad(&p.logits, &p.tau, &dpi);
    g
}
