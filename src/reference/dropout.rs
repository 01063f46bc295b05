//! Twin of `shaders/dropout.wgsl`: the same integer mask, computed on the host.

fn mix(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Whether element `i` is kept for drop probability `p` and `seed` (never when `p = 1`).
pub fn keep(i: usize, p: f64, seed: u64) -> bool {
    if p >= 1.0 {
        return false;
    }
    let threshold = (p * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32;
    mix(mix(i as u32 ^ seed as u32).wrapping_add((seed >> 32) as u32)) >= threshold
}

/// `y[i] = keep(offset + i) ? x[i] / (1 − p) : 0`.
pub fn dropout(x: &[f64], p: f64, seed: u64, offset: usize) -> Vec<f64> {
    let scale = f64::from((1.0 / (1.0 - p)) as f32);
    x.iter().enumerate().map(|(i, &v)| if keep(offset.wrapping_add(i), p, seed) { v * scale } else { 0.0 }).collect()
}
