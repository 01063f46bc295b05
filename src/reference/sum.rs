//! Twins of `shaders/sum.wgsl`.

/// `s[j] = Σ_r a[r, j]` for `a` viewed `[rows, cols]`.
pub fn sum_rows(a: &[f64], cols: usize) -> Vec<f64> {
    let mut s = vec![0.0; cols];
    for row in a.chunks(cols) {
        for (acc, v) in s.iter_mut().zip(row) {
            *acc += v;
        }
    }
    s
}

/// `Σ_i a[i]`.
pub fn sum_all(a: &[f64]) -> f64 {
    a.iter().sum()
}
