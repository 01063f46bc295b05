//! Twins of `shaders/spectral.wgsl`: the MoPPA filter and its gradients, from the definition.
//!
//! `dims` = `[batch, tokens, channels]`; the last `gh·gw` tokens form the grid; `r` is
//! `[gh, gw, channels]`.

use super::dct::{dct2_grid, dct3_grid};

/// `grid_scale`: grid tokens times `r` (broadcast over the batch), prefix copied.
pub fn grid_scale(x: &[f64], dims: [usize; 3], r: &[f64]) -> Vec<f64> {
    let [_, tokens, ch] = dims;
    let prefix = tokens - r.len() / ch;
    let mut y = x.to_vec();
    for (e, v) in y.iter_mut().enumerate() {
        let t = (e / ch) % tokens;
        if t >= prefix {
            *v *= r[(t - prefix) * ch + e % ch];
        }
    }
    y
}

/// `grid_mul_reduce`: `Σ_b u ⊙ v` over the grid tokens, `[gh·gw·channels]`.
pub fn grid_mul_reduce(u: &[f64], v: &[f64], dims: [usize; 3], cells: usize) -> Vec<f64> {
    let [batch, tokens, ch] = dims;
    let prefix = tokens - cells;
    let mut out = vec![0.0; cells * ch];
    for b in 0..batch {
        for (i, o) in out.iter_mut().enumerate() {
            let at = (b * tokens + prefix) * ch + i;
            *o += u[at] * v[at];
        }
    }
    out
}

/// `moppa_fused`: `y = IDCT2(DCT2(x) ⊙ r)` per channel, prefix copied.
pub fn moppa_filter(x: &[f64], dims: [usize; 3], gh: usize, gw: usize, r: &[f64]) -> Vec<f64> {
    dct3_grid(&grid_scale(&dct2_grid(x, dims, gh, gw), dims, r), dims, gh, gw)
}

/// `moppa_fused_grad`: `(∂x, ∂r)` with `∂x = moppa_filter(∂y, r)` and
/// `∂r = Σ_b DCT2(x) ⊙ DCT2(∂y)`.
pub fn moppa_filter_grads(
    x: &[f64],
    dims: [usize; 3],
    gh: usize,
    gw: usize,
    r: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let dx = moppa_filter(dy, dims, gh, gw, r);
    let dr = grid_mul_reduce(&dct2_grid(x, dims, gh, gw), &dct2_grid(dy, dims, gh, gw), dims, gh * gw);
    (dx, dr)
}

/// `spectral_tile` (`shaders/spectral_tile.wgsl`): mode 0 is [`moppa_filter`]; mode 1 is the
/// spectrum `DCT2(x_grid)` laid out `[batch, gh·gw, channels]` (prefix dropped).
pub fn spectral_tile(x: &[f64], dims: [usize; 3], gh: usize, gw: usize, r: &[f64], mode: u32) -> Vec<f64> {
    if mode == 0 {
        return moppa_filter(x, dims, gh, gw, r);
    }
    let [batch, tokens, ch] = dims;
    let prefix = tokens - gh * gw;
    let full = dct2_grid(x, dims, gh, gw);
    (0..batch).flat_map(|b| full[(b * tokens + prefix) * ch..(b + 1) * tokens * ch].to_vec()).collect()
}
