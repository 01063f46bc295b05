//! Twins of `shaders/activation.wgsl`: erf, erfc and exact GELU in f64.
//!
//! erf comes from the everywhere-positive series
//! `erf(x) = (2/√π)·e^{−x²}·Σ_n 2ⁿx^{2n+1}/(1·3·5·…·(2n+1))` for `|x| < 2.5` (no
//! cancellation, so close to f64 round-off), and from the continued fraction
//! `erfc(x) = (e^{−x²}/√π) / (x + ½/(x + 1/(x + (3/2)/(x + 2/(x + …)))))` beyond.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

const SERIES_LIMIT: f64 = 2.5;

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// erfc for `x ≥ SERIES_LIMIT`, by the continued fraction evaluated from depth 120 down.
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for n in (1..=120).rev() {
        f = x + (n as f64 / 2.0) / f;
    }
    (-x * x).exp() / PI.sqrt() / f
}

/// The error function.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() < SERIES_LIMIT { erf_series(x) } else { x.signum() * (1.0 - erfc_continued_fraction(x.abs())) }
}

/// The complementary error function `1 − erf(x)`, accurate relative to itself for `x ≫ 0`.
pub fn erfc(x: f64) -> f64 {
    if x >= SERIES_LIMIT { erfc_continued_fraction(x) } else { 1.0 - erf(x) }
}

/// `Φ(x) = ½·erfc(−x/√2)`, the standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
}

/// `φ(x) = exp(−x²/2)/√(2π)`, the standard normal density.
pub fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// `gelu(x) = x·Φ(x)` elementwise.
pub fn gelu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v * normal_cdf(v)).collect()
}

/// `∂x = ∂y·(Φ(x) + x·φ(x))`.
pub fn gelu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter().zip(dy).map(|(&v, &g)| g * (normal_cdf(v) + v * normal_pdf(v))).collect()
}

fn add_bias(x: &[f64], b: &[f64]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &v)| v + b[i % b.len()]).collect()
}

/// `gelu(x + b)`, `b` broadcast over the rows of `x` (`x.len()` a multiple of `b.len()`).
pub fn bias_gelu(x: &[f64], b: &[f64]) -> Vec<f64> {
    gelu(&add_bias(x, b))
}

/// `∂z = ∂y·gelu'(x + b)`.
pub fn bias_gelu_backward(x: &[f64], b: &[f64], dy: &[f64]) -> Vec<f64> {
    gelu_backward(&add_bias(x, b), dy)
}
