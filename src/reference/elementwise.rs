//! Twins of `shaders/elementwise.wgsl`.

/// `a + b`.
pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `a ⊙ b`.
pub fn mul(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// `alpha·a + beta·b`.
pub fn axpby(alpha: f64, a: &[f64], beta: f64, b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| alpha * x + beta * y).collect()
}

/// `alpha·a`.
pub fn scale(a: &[f64], alpha: f64) -> Vec<f64> {
    a.iter().map(|x| alpha * x).collect()
}
