// Softmax over the last axis with a scale applied first, forward and backward.
//
//   softmax:           z_j = α·x_j,   y_j = exp(z_j − max_k z_k) / Σ_k exp(z_k − max_k z_k)
//   softmax_backward:  ∂x_j = α·y_j·(∂y_j − Σ_k ∂y_k·y_k)
//
// Layout: x, y, ∂y, ∂x: [rows, d] row-major; softmax binds x then y, softmax_backward binds
// y, ∂y then ∂x. Params `SoftmaxParams` (host: ops::softmax::SoftmaxParams). One workgroup
// per row (row = wid.x + wid.y·nwg.x); each invocation strides over the row, then a
// workgroup tree reduction combines the partial max / sums.

const WG: u32 = 256u;

struct SoftmaxParams {
    rows: u32,
    d: u32,
    alpha: f32,
    _pad: u32,
}

var<immediate> p: SoftmaxParams;

var<workgroup> red: array<f32, WG>;

// Maximum of `v` over the workgroup; every invocation receives it.
fn workgroup_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Sum of `v` over the workgroup; every invocation receives it.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.d;
    var m = -3.4028235e38;
    for (var j = lid; j < p.d; j += WG) {
        m = max(m, p.alpha * x[base + j]);
    }
    m = workgroup_max(m, lid);
    var s = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        s += exp(p.alpha * x[base + j] - m);
    }
    let inv = 1.0 / workgroup_sum(s, lid);
    for (var j = lid; j < p.d; j += WG) {
        y[base + j] = exp(p.alpha * x[base + j] - m) * inv;
    }
}

@group(0) @binding(0) var<storage, read> bw_y: array<f32>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> bw_dx: array<f32>;

@compute @workgroup_size(WG)
fn softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.d;
    var s = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        s += bw_y[base + j] * bw_dy[base + j];
    }
    let dot = workgroup_sum(s, lid);
    for (var j = lid; j < p.d; j += WG) {
        bw_dx[base + j] = p.alpha * bw_y[base + j] * (bw_dy[base + j] - dot);
    }
}
