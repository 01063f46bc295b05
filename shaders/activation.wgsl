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

// erfc(z) for z ≥ 0, relative error ≲ 3e-7 · max(1, z²) (the z² from rounding z itself).
fn erfc_pos(z: f32) -> f32 {
    if (z < 1.0) {
        return (1.0 - z) - z * erf_small(z * z);
    }
    return exp(-z * z) * erfcx_tail(z);
}

fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 1.0) {
        return x + x * erf_small(a * a);
    }
    return sign(x) * (1.0 - erfc_pos(a));
}

// Φ(x), the standard normal CDF.
fn normal_cdf(x: f32) -> f32 {
    let c = 0.5 * erfc_pos(abs(x) * FRAC_1_SQRT_2);
    return select(c, 1.0 - c, x >= 0.0);
}

fn gelu_grad(x: f32) -> f32 {
    return normal_cdf(x) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
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
