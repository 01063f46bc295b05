//! Twins of `shaders/norm.wgsl`: LayerNorm over the last axis in f64, from the textbook
//! formulas (biased variance, as PyTorch).

use super::sum::sum_rows;

fn stats(row: &[f64], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `y = (x − μ)/√(σ² + eps)·γ + β` per row of `x` (`[rows, d]`, `d = gamma.len()`); also
/// returns the row means and `rstd = 1/√(σ² + eps)`.
pub fn layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = gamma.len();
    let (mut y, mut means, mut rstds) = (Vec::with_capacity(x.len()), Vec::new(), Vec::new());
    for row in x.chunks(d) {
        let (mean, rstd) = stats(row, eps);
        y.extend(row.iter().enumerate().map(|(j, v)| (v - mean) * rstd * gamma[j] + beta[j]));
        means.push(mean);
        rstds.push(rstd);
    }
    (y, means, rstds)
}

/// `x̂ = (x − μ)·rstd` per row.
pub fn normalized(x: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let ones = vec![1.0; d];
    layer_norm(x, &ones, &vec![0.0; d], eps).0
}

/// `∂x = rstd·(g − mean(g) − x̂·mean(g·x̂))` per row, `g = ∂y·γ`.
pub fn layer_norm_backward(x: &[f64], gamma: &[f64], dy: &[f64], eps: f64) -> Vec<f64> {
    let d = gamma.len();
    let mut dx = Vec::with_capacity(x.len());
    for (row, dyr) in x.chunks(d).zip(dy.chunks(d)) {
        let (mean, rstd) = stats(row, eps);
        let xh: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
        let g: Vec<f64> = dyr.iter().zip(gamma).map(|(a, b)| a * b).collect();
        let mg = g.iter().sum::<f64>() / d as f64;
        let mgx = g.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        dx.extend(g.iter().zip(&xh).map(|(gj, xj)| rstd * (gj - mg - xj * mgx)));
    }
    dx
}

/// `∂γ = Σ_rows ∂y ⊙ x̂` (the finished result of `layer_norm_gamma_partials`).
pub fn layer_norm_gamma_partials(x: &[f64], dy: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let prod: Vec<f64> = normalized(x, d, eps).iter().zip(dy).map(|(a, b)| a * b).collect();
    sum_rows(&prod, d)
}
