// LayerNorm over the last axis for CPU adapters (lavapipe): the maths of norm.wgsl,
//
//   layer_norm_rows:           μ = Σ_j x_j / d,  σ² = Σ_j (x_j − μ)² / d  (two passes),
//                              rstd = 1/√(σ² + eps),  y_j = (x_j − μ)·rstd·γ_j + β_j
//   layer_norm_backward_rows:  with g_j = ∂y_j·γ_j and x̂_j = (x_j − μ)·rstd,
//                              ∂x_j = rstd·(g_j − mean_j(g) − x̂_j·mean_j(g·x̂))
//
// for d % 4 = 0. One invocation per row, 8 rows per workgroup: a CPU driver runs the 8 as
// the lanes of SIMD registers, so each lane walks its row in vec4s and no workgroup
// reduction (barriers, shared memory: slow there) is needed; γ and β are the same for all
// lanes (uniform loads). Lanes past the last row repeat it and store the same values.
// norm.wgsl's workgroup-per-row kernels are the GPU ones.
//
// Layout as norm.wgsl: x, y, ∂y, ∂x [rows, d] (vec4s here); γ, β [d]; mean, rstd [rows].
// Params `NormParams` (host: ops::norm::NormParams). Grid: ⌈rows / 8⌉ workgroups, folded.

struct NormParams {
    rows: u32,
    d: u32,
    eps: f32,
    rows_per_chunk: u32,
}

const LANES: u32 = 8u;

var<immediate> p: NormParams;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return min((wid.x + wid.y * nwg.x) * LANES + li, p.rows - 1u);
}

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> gamma: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> beta: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;

@compute @workgroup_size(LANES)
fn layer_norm_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_of(wid, nwg, li);
    let d4 = p.d / 4u;
    let base = row * d4;
    var s = vec4<f32>();
    for (var j = 0u; j < d4; j++) {
        s += x[base + j];
    }
    let mu = hsum(s) / f32(p.d);
    var q = vec4<f32>();
    for (var j = 0u; j < d4; j++) {
        let c = x[base + j] - mu;
        q = fma(c, c, q);
    }
    // An overflowed variance gives rstd = +inf, a non-finite output (see norm.wgsl).
    let s2 = hsum(q) / f32(p.d);
    let r = select(inverseSqrt(s2 + p.eps), s2, s2 > 3.0e38);
    for (var j = 0u; j < d4; j++) {
        y[base + j] = fma((x[base + j] - mu) * r, gamma[j], beta[j]);
    }
    mean[row] = mu;
    rstd[row] = r;
}

@group(0) @binding(2) var<storage, read> bw_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bw_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bw_dy: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> bw_dx: array<vec4<f32>>;

@compute @workgroup_size(LANES)
fn layer_norm_backward_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_of(wid, nwg, li);
    let d4 = p.d / 4u;
    let base = row * d4;
    let mu = bw_mean[row];
    let r = bw_rstd[row];
    var sg = vec4<f32>();
    var sgx = vec4<f32>();
    for (var j = 0u; j < d4; j++) {
        let g = bw_dy[base + j] * gamma[j];
        sg += g;
        sgx = fma(g, (x[base + j] - mu) * r, sgx);
    }
    let mg = hsum(sg) / f32(p.d);
    let mgx = hsum(sgx) / f32(p.d);
    for (var j = 0u; j < d4; j++) {
        let g = bw_dy[base + j] * gamma[j];
        let xh = (x[base + j] - mu) * r;
        bw_dx[base + j] = r * (g - mg - xh * mgx);
    }
}
