// Exact GELU and the erf it is built on.
//
//   erf:                 y = erf(a)
//   gelu:                y = x·Φ(x),   Φ(x) = ½·(1 + erf(x/√2)) = ½·erfc(−x/√2)
//   gelu_backward:       ∂x = ∂y·(Φ(x) + x·φ(x)),   φ(x) = exp(−x²/2)/√(2π)
//   bias_gelu:           y = gelu(x + b),  b [cols] broadcast over the rows of x [.., cols]
//   bias_gelu_backward:  ∂z = ∂y·gelu'(x + b)   (= ∂x; ∂b is the column sum of ∂z)
//
// erf has no WGSL builtin. Three pieces, fitted by scripts/fit_erf.py (max fit errors 3e-11,
// 2e-9, 3e-9); the result is within about one f32 ulp (relative error ≲ 1.2e-7):
//   |x| < 1:       erf(x) = x + x·A(x²)                  (the leading x is exact)
//   1 ≤ z < 2.5:   erfc(z) = exp(−z²)·B(1/z − 0.7)       (B ≈ erfc(z)·exp(z²))
//   z ≥ 2.5:       erfc(z) = exp(−z²)·C(1/z²)/(z·√π)
// and erf = sign·(1 − erfc(|x|)) for |x| ≥ 1. Φ uses erfc on the negative side, so GELU keeps
// its relative accuracy for x ≪ 0 instead of losing it to 1 + erf(x/√2) cancelling.
// The exponentials are this file's own `exp_accurate`, of x² split so that its rounding does
// not enter (`exp_neg_square`): the built-in exp may be off by 3 + 2·|x| ulp under Vulkan's
// precision rules (a GELU test failed on an H200 with it, most likely in the tail), and in
// Φ's tail the exponential's error, or x²'s rounding, is the whole error of the result.
//
// Layout: inputs (x, then b or ∂y as the kernel needs), then the output; all f32, flat.
// Params `ActivationParams` (host: ops::activation::ActivationParams). One thread per
// element; the 1-D grid may fold into two dimensions (i = gid.x + gid.y·nwg.x·WG).

const WG: u32 = 256u;

struct ActivationParams {
    n: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

var<immediate> p: ActivationParams;

const FRAC_1_SQRT_2: f32 = 0.70710677;
const FRAC_1_SQRT_PI: f32 = 0.5641896;
const FRAC_1_SQRT_2PI: f32 = 0.3989423;

const LOG2_E: f32 = 1.442695;
// ln 2 in two parts; the first has 15 significant bits, so k·LN2_HI is exact for |k| < 512.
const LN2_HI: f32 = 0.693145751953125;
const LN2_LO: f32 = 1.4286068e-6;

// e^x within about one ulp for x ≤ 89 on any device: x = k·ln 2 + r with |r| ≤ ½ ln 2, e^r by
// its Taylor series to r⁸ (truncation ≲ 1e-9), then 2^k exactly. Below −104 the result is
// below f32's range and comes out 0.
fn exp_accurate(x: f32) -> f32 {
    let v = max(x, -104.0);
    let k = round(v * LOG2_E);
    let r = (v - k * LN2_HI) - k * LN2_LO;
    let e = 1.0 + r * (1.0 + r * (0.5 + r * (0.16666667 + r * (0.041666668 + r * (0.008333334
        + r * (0.0013888889 + r * (0.0001984127 + r * 2.4801588e-5)))))));
    return ldexp(e, i32(k));
}

// erf(x)/x − 1 as a polynomial in t = x², for t ≤ 1.
fn erf_small(t: f32) -> f32 {
    return 0.12837917 + t * (-0.37612638 + t * (0.11283783 + t * (-0.026865438 + t * (0.005221054
        + t * (-0.00084844016 + t * (0.00011268291 + t * -9.673696e-6))))));
}

// erfc(z)·exp(z²) for z ≥ 1.
fn erfcx_tail(z: f32) -> f32 {
    let w = 1.0 / z;
    if (z < 2.5) {
        let s = w - 0.7;
        return 0.33367366 + s * (0.35719565 + s * (-0.16193831 + s * (0.048461508 + s * (0.008968097
            + s * (-0.030488076 + s * (0.031202354 + s * (-0.020410825 + s * 0.005750336)))))));
    }
    let u = w * w;
    let c = 1.0 + u * (-0.4999973 + u * (0.7496174 + u * (-1.8538138 + u * (5.9568686 + u * (-19.228569
        + u * (46.006207 + u * -54.212646))))));
    return c * w * FRAC_1_SQRT_PI;
}

// e^(−s·x²) for s = 1 or ½ without rounding x² first: x = h + (x − h) with h holding x's top
// 12 bits, so s·h² is exact and s·(h − x)(h + x) = s·(h² − x²) is small and nearly exact.
fn exp_neg_square(x: f32, s: f32) -> f32 {
    let h = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
    return exp_accurate(-s * h * h) * exp_accurate(s * (h - x) * (h + x));
}

// Past this erfc(z) < 2⁻¹⁴⁹, below f32's range.
const ERFC_ZERO_FROM: f32 = 10.5;

// erfc(z) for 0 ≤ z < 1.
fn erfc_small(z: f32) -> f32 {
    return (1.0 - z) - z * erf_small(z * z);
}

// erfc(z) for z ≥ 0, within a few ulp.
fn erfc_pos(z: f32) -> f32 {
    if (z < 1.0) {
        return erfc_small(z);
    }
    if (z > ERFC_ZERO_FROM) {
        return 0.0;
    }
    return exp_neg_square(z, 1.0) * erfcx_tail(z);
}

fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 1.0) {
        return x + x * erf_small(a * a);
    }
    return sign(x) * (1.0 - erfc_pos(a));
}

// Φ(x), the standard normal CDF: ½·erfc(|x|/√2), or 1 minus it for x ≥ 0. In the tail the
// factor e^(−x²/2) comes from x itself: from z = |x|/√2, already rounded, its relative error
// would be 2z²·ε.
fn normal_cdf(x: f32) -> f32 {
    let a = abs(x);
    let z = a * FRAC_1_SQRT_2;
    var c = 0.0;
    if (z < 1.0) {
        c = 0.5 * erfc_small(z);
    } else if (z <= ERFC_ZERO_FROM) {
        c = 0.5 * exp_neg_square(a, 0.5) * erfcx_tail(z);
    }
    return select(c, 1.0 - c, x >= 0.0);
}

// Past this e^(−x²/2) < 2⁻¹⁵⁰ (from |x| ≈ 14.4): Φ is 0 or 1 and x·φ(x) is 0.
const GAUSS_ZERO_FROM: f32 = 15.0;

// Φ(x) + x·φ(x), with one e^(−x²/2) for both terms.
fn gelu_grad(x: f32) -> f32 {
    let a = abs(x);
    if (a > GAUSS_ZERO_FROM) {
        return select(0.0, 1.0, x > 0.0);
    }
    let gauss = exp_neg_square(a, 0.5);
    let z = a * FRAC_1_SQRT_2;
    var c: f32;
    if (z < 1.0) {
        c = 0.5 * erfc_small(z);
    } else {
        c = 0.5 * gauss * erfcx_tail(z);
    }
    return select(c, 1.0 - c, x >= 0.0) + x * FRAC_1_SQRT_2PI * gauss;
}

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn erf(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = erf_f32(x[i]);
}

@compute @workgroup_size(WG)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    y[i] = v * normal_cdf(v);
}

@group(0) @binding(1) var<storage, read> second: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// second = ∂y
@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = second[i] * gelu_grad(x[i]);
}

// second = b
@compute @workgroup_size(WG)
fn bias_gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i] + second[i % p.cols];
    out[i] = v * normal_cdf(v);
}

@group(0) @binding(2) var<storage, read> bgb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bgb_dz: array<f32>;

// second = b
@compute @workgroup_size(WG)
fn bias_gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    bgb_dz[i] = bgb_dy[i] * gelu_grad(x[i] + second[i % p.cols]);
}
