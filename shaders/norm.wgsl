// LayerNorm over the last axis, forward and backward.
//
//   layer_norm:                 per row r of x [rows, d]
//       μ = Σ_j x_j / d,   σ² = Σ_j (x_j − μ)² / d        (two passes, biased variance)
//       rstd = 1/√(σ² + eps),   x̂_j = (x_j − μ)·rstd,   y_j = x̂_j·γ_j + β_j
//       also writes mean[r] = μ and rstd[r] for the backward pass.
//   layer_norm_backward:        with g_j = ∂y_j·γ_j,
//       ∂x_j = rstd·(g_j − mean_j(g) − x̂_j·mean_j(g·x̂))
//   layer_norm_gamma_partials:  partial[c, j] = Σ_{r in chunk c} ∂y[r, j]·x̂[r, j]
//       (chunk c holds rows c·rows_per_chunk ..; ops::sum::sum_rows (shaders/sum.wgsl) finishes ∂γ)
//
// Layouts: x, y, ∂y, ∂x: [rows, d] row-major; γ, β: [d]; mean, rstd: [rows];
// partial: [ceil(rows / rows_per_chunk), d]. Params `NormParams` (host: ops::norm::NormParams).
// The row kernels run one workgroup per row (row = wid.x + wid.y·nwg.x) with a workgroup
// tree reduction; the partials kernel runs one thread per (column, chunk).

const WG: u32 = 256u;

struct NormParams {
    rows: u32,
    d: u32,
    eps: f32,
    rows_per_chunk: u32,
}

var<immediate> p: NormParams;

var<workgroup> red: array<vec2<f32>, WG>;

// Sum of `v` over the workgroup; every invocation receives the total.
fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.d;
    let n = f32(p.d);
    var s = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        s += x[base + j];
    }
    let mu = workgroup_sum(vec2(s, 0.0), lid).x / n;
    var q = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        let c = x[base + j] - mu;
        q += c * c;
    }
    // A variance that overflowed f32 (|x − μ| past about 1.8e19) gives rstd = +inf, so the
    // output is not finite (PyTorch's is NaN) rather than a quiet β.
    let s2 = workgroup_sum(vec2(q, 0.0), lid).x / n;
    let r = select(inverseSqrt(s2 + p.eps), s2, s2 > 3.0e38);
    for (var j = lid; j < p.d; j += WG) {
        y[base + j] = (x[base + j] - mu) * r * gamma[j] + beta[j];
    }
    if (lid == 0u) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

@group(0) @binding(2) var<storage, read> bw_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bw_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> bw_dx: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.d;
    let mu = bw_mean[row];
    let r = bw_rstd[row];
    var acc = vec2(0.0);
    for (var j = lid; j < p.d; j += WG) {
        let g = bw_dy[base + j] * gamma[j];
        acc += vec2(g, g * (x[base + j] - mu) * r);
    }
    let m = workgroup_sum(acc, lid) / f32(p.d);
    for (var j = lid; j < p.d; j += WG) {
        let g = bw_dy[base + j] * gamma[j];
        let xh = (x[base + j] - mu) * r;
        bw_dx[base + j] = r * (g - m.x - xh * m.y);
    }
}

@group(0) @binding(1) var<storage, read> gp_mean: array<f32>;
@group(0) @binding(2) var<storage, read> gp_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> gp_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> gp_partial: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_gamma_partials(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= p.d) { return; }
    let chunk = gid.y;
    let first = chunk * p.rows_per_chunk;
    let end = min(first + p.rows_per_chunk, p.rows);
    var acc = 0.0;
    for (var r = first; r < end; r++) {
        let i = r * p.d + col;
        acc += gp_dy[i] * (x[i] - gp_mean[r]) * gp_rstd[r];
    }
    gp_partial[chunk * p.d + col] = acc;
}
