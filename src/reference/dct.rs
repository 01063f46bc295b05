//! Twins of `shaders/dct.wgsl`, straight from the definition with f64 cosines.
//!
//! Token tensors are `[batch, tokens, channels]` (`dims`) whose last `gh·gw` tokens form a
//! row-major grid; the prefix before them is copied.

use std::f64::consts::PI;

/// The orthonormal DCT-II matrix, row-major `[k, n]`: `C[k, n] = s_k cos(π (n + ½) k / N)`.
pub fn dct_matrix(n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for k in 0..n {
        let s = if k == 0 { (1.0 / n as f64).sqrt() } else { (2.0 / n as f64).sqrt() };
        for j in 0..n {
            c[k * n + j] = s * (PI * (j as f64 + 0.5) * k as f64 / n as f64).cos();
        }
    }
    c
}

fn rows(x: &[f64], n: usize, transpose: bool) -> Vec<f64> {
    let c = dct_matrix(n);
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        for (a, out) in yr.iter_mut().enumerate() {
            *out = (0..n).map(|b| if transpose { c[b * n + a] } else { c[a * n + b] } * xr[b]).sum();
        }
    }
    y
}

/// DCT-II of every length-`n` row of `x`.
pub fn dct2_rows(x: &[f64], n: usize) -> Vec<f64> {
    rows(x, n, false)
}

/// DCT-III (`Cᵀ`, the inverse of [`dct2_rows`]) of every length-`n` row of `x`.
pub fn dct3_rows(x: &[f64], n: usize) -> Vec<f64> {
    rows(x, n, true)
}

fn grid_axis(x: &[f64], dims: [usize; 3], gh: usize, gw: usize, axis: usize, transpose: bool) -> Vec<f64> {
    let [batch, tokens, ch] = dims;
    let prefix = tokens - gh * gw;
    let len = if axis == 1 { gw } else { gh };
    let c = dct_matrix(len);
    let mut y = x.to_vec();
    for b in 0..batch {
        for i in 0..gh {
            for j in 0..gw {
                let (a, at) = if axis == 1 { (j, i * gw) } else { (i, j) };
                let step = if axis == 1 { 1 } else { gw };
                for cc in 0..ch {
                    let mut acc = 0.0;
                    for u in 0..len {
                        let m = if transpose { c[u * len + a] } else { c[a * len + u] };
                        acc += m * x[(b * tokens + prefix + at + u * step) * ch + cc];
                    }
                    y[(b * tokens + prefix + i * gw + j) * ch + cc] = acc;
                }
            }
        }
    }
    y
}

/// DCT-II along one grid axis (0: along h, 1: along w); prefix tokens copied.
pub fn dct2_grid_axis(x: &[f64], dims: [usize; 3], gh: usize, gw: usize, axis: usize) -> Vec<f64> {
    grid_axis(x, dims, gh, gw, axis, false)
}

/// DCT-III along one grid axis (0: along h, 1: along w); prefix tokens copied.
pub fn dct3_grid_axis(x: &[f64], dims: [usize; 3], gh: usize, gw: usize, axis: usize) -> Vec<f64> {
    grid_axis(x, dims, gh, gw, axis, true)
}

/// 2-D DCT-II per channel, `C_h · x · C_wᵀ`; prefix tokens copied.
pub fn dct2_grid(x: &[f64], dims: [usize; 3], gh: usize, gw: usize) -> Vec<f64> {
    dct2_grid_axis(&dct2_grid_axis(x, dims, gh, gw, 1), dims, gh, gw, 0)
}

/// 2-D DCT-III per channel, `C_hᵀ · x · C_w`; prefix tokens copied.
pub fn dct3_grid(x: &[f64], dims: [usize; 3], gh: usize, gw: usize) -> Vec<f64> {
    dct3_grid_axis(&dct3_grid_axis(x, dims, gh, gw, 1), dims, gh, gw, 0)
}
