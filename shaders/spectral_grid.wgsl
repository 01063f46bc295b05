// The unfused MoPPA filter's pieces (host: src/ops/spectral/mod.rs; twins:
// src/reference/spectral.rs), used with dct2_grid_axis / dct3_grid_axis of shaders/dct.wgsl for grids too
// large for the fused kernels of shaders/spectral.wgsl. One thread per output element; the
// 1-D grid folds into two dimensions.
// grid_scale:      y[b, t, c] = x[b, t, c] · r[t − P, c] on grid tokens, x on prefix tokens.
//                  inputs x [B·T·C], r [gh·gw·C]; output y; params GridOpParams.
// grid_mul_reduce: out[cell, c] = Σ_b u[b, P + cell, c] · v[b, P + cell, c].
//                  inputs u, v [B·T·C]; output out [gh·gw·C].
// sum_chunks:      out[i] = Σ_k part[k · len + i] over k < o.batch chunks.
//                  input part [chunks·len]; output out [len] (len = o.total).

const WG: u32 = 256u;

struct GridOpParams {
    batch: u32,
    tokens: u32,
    prefix: u32,
    grid: u32,
    channels: u32,
    total: u32,
}

var<immediate> o: GridOpParams;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read> u_in: array<f32>;
@group(0) @binding(1) var<storage, read> v_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn grid_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat(gid, nwg);
    if (e >= o.total) { return; }
    let c = e % o.channels;
    let t = (e / o.channels) % o.tokens;
    if (t < o.prefix) {
        out[e] = u_in[e];
    } else {
        out[e] = u_in[e] * v_in[(t - o.prefix) * o.channels + c];
    }
}

@compute @workgroup_size(WG)
fn grid_mul_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat(gid, nwg);
    if (e >= o.total) { return; }
    let c = e % o.channels;
    let cell = e / o.channels;
    var acc = 0.0;
    for (var b = 0u; b < o.batch; b++) {
        let at = (b * o.tokens + o.prefix + cell) * o.channels + c;
        acc += u_in[at] * v_in[at];
    }
    out[e] = acc;
}

@group(0) @binding(1) var<storage, read_write> sum_out: array<f32>;

@compute @workgroup_size(WG)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= o.total) { return; }
    var acc = 0.0;
    for (var k = 0u; k < o.batch; k++) {
        acc += u_in[k * o.total + i];
    }
    sum_out[i] = acc;
}
