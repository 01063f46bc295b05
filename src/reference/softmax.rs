//! Twins of `shaders/softmax.wgsl`.

/// `y = softmax(alpha·x)` over rows of length `d`.
pub fn softmax(x: &[f64], d: usize, alpha: f64) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let m = row.iter().map(|v| alpha * v).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (alpha * v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        y.extend(e.iter().map(|v| v / s));
    }
    y
}

/// `∂x = alpha·y ⊙ (∂y − Σ_row ∂y ⊙ y)`.
pub fn softmax_backward(y: &[f64], dy: &[f64], d: usize, alpha: f64) -> Vec<f64> {
    let mut dx = Vec::with_capacity(y.len());
    for (yr, gr) in y.chunks(d).zip(dy.chunks(d)) {
        let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        dx.extend(yr.iter().zip(gr).map(|(a, g)| alpha * a * (g - dot)));
    }
    dx
}
