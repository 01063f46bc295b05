//! Twins of `shaders/reduce.wgsl`.

/// `s[j] = Σ_r a[r, j]` for `a` of shape `[rows, cols]`.
pub fn column_sums(a: &[f64], cols: usize) -> Vec<f64> {
    let mut s = vec![0.0; cols];
    for row in a.chunks(cols) {
        for (acc, v) in s.iter_mut().zip(row) {
            *acc += v;
        }
    }
    s
}

/// `Σ a / n`.
pub fn mean(a: &[f64]) -> f64 {
    a.iter().sum::<f64>() / a.len() as f64
}
