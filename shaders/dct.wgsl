// Orthonormal DCT-II and its inverse DCT-III (host: src/ops/dct.rs; twins: src/reference/dct.rs).
//
//   DCT-II  (C):   X[k] = s_k · Σ_n x[n] · cos(π (2n+1) k / (2N))
//   DCT-III (Cᵀ):  x[n] = Σ_k s_k · X[k] · cos(π (2n+1) k / (2N))
//   s_0 = √(1/N), s_k = √(2/N) for k > 0; both passed in as params (p.s0, p.s), rounded once
//   from f64 on the host.
//
// No cosine is evaluated here. `table` holds cos(π m / (2N)) for m in 0..4N, computed on the
// host in f64; the angle index is the exact integer (2n+1)·k mod 4N.
//
// dct2_rows / dct3_rows: x and y are [rows, N], transformed along the last axis. One
// workgroup owns one row and WG consecutive outputs; the inputs of the row pass through
// workgroup memory WG at a time. The workgroup index folds into two dimensions.
//   inputs x [rows·N], table [4N]; output y [rows·N]; params `DctParams`.
//
// dct2_grid_axis / dct3_grid_axis: tokens [B, T, C] whose last gh·gw tokens form a row-major
// grid (the first `prefix` tokens are copied through). Transforms along one grid axis
// (p.axis 0: along h, the grid columns; 1: along w, the grid rows), one thread per output
// element, channels fastest so neighbouring threads touch neighbouring addresses.
//   inputs x [B·T·C], tables [4gh + 4gw] (the h table, then the w table); output y
//   [B·T·C]; params `GridParams`.

const WG: u32 = 256u;

struct DctParams {
    rows: u32,
    n: u32,
    blocks: u32,
    s0: f32,
    s: f32,
}

struct GridParams {
    batch: u32,
    tokens: u32,
    prefix: u32,
    gh: u32,
    gw: u32,
    channels: u32,
    axis: u32,
    total: u32,
    s0h: f32,
    sh: f32,
    s0w: f32,
    sw: f32,
}

var<immediate> p: DctParams;
var<immediate> q: GridParams;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> tile: array<f32, WG>;

// One row, outputs `block·WG + lid`. Forward: out index k, sum over n; inverse: out index n,
// sum over k with the input pre-scaled by s_k as it enters workgroup memory.
fn rows(lid: u32, wid: vec3<u32>, nwg: vec3<u32>, inverse: bool) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= p.rows * p.blocks) { return; }
    let row = w / p.blocks;
    let a = (w % p.blocks) * WG + lid;
    let live = a < p.n;
    let n4 = 4u * p.n;
    var acc = 0.0;
    for (var b0 = 0u; b0 < p.n; b0 += WG) {
        let b = b0 + lid;
        var v = 0.0;
        if (b < p.n) {
            v = x[row * p.n + b];
            if (inverse) { v *= select(p.s, p.s0, b == 0u); }
        }
        tile[lid] = v;
        workgroupBarrier();
        if (live) {
            // Angle index (2b+1)·a (forward) or (2a+1)·b (inverse), stepped exactly mod 4N.
            var idx = select((2u * b0 + 1u) * a, (2u * a + 1u) * b0, inverse) % n4;
            let step = select(2u * a, 2u * a + 1u, inverse) % n4;
            let m = min(WG, p.n - b0);
            var part = 0.0;
            for (var t = 0u; t < m; t++) {
                part += tile[t] * table[idx];
                idx += step;
                if (idx >= n4) { idx -= n4; }
            }
            acc += part;
        }
        workgroupBarrier();
    }
    if (live) {
        if (!inverse) { acc *= select(p.s, p.s0, a == 0u); }
        y[row * p.n + a] = acc;
    }
}

@compute @workgroup_size(WG)
fn dct2_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    rows(lid, wid, nwg, false);
}

@compute @workgroup_size(WG)
fn dct3_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    rows(lid, wid, nwg, true);
}

fn grid_axis(e: u32, inverse: bool) {
    if (e >= q.total) { return; }
    let c = e % q.channels;
    let t = (e / q.channels) % q.tokens;
    let b = e / (q.channels * q.tokens);
    if (t < q.prefix) {
        y[e] = x[e];
        return;
    }
    let pos = t - q.prefix;
    let i = pos / q.gw;
    let j = pos % q.gw;
    // Along w: the row i, element j; along h: the column j, element i.
    let along_w = q.axis == 1u;
    let len = select(q.gh, q.gw, along_w);
    let a = select(i, j, along_w);
    let first = select(q.prefix + j, q.prefix + i * q.gw, along_w);
    let stride = select(q.gw, 1u, along_w) * q.channels;
    let off = select(0u, 4u * q.gh, along_w);
    let s0 = select(q.s0h, q.s0w, along_w);
    let s = select(q.sh, q.sw, along_w);
    let n4 = 4u * len;
    var src = (b * q.tokens + first) * q.channels + c;
    var idx = select(a, 0u, inverse);
    let step = select(2u * a, 2u * a + 1u, inverse) % n4;
    var acc = 0.0;
    for (var u = 0u; u < len; u++) {
        var term = x[src] * table[off + idx];
        if (inverse) { term *= select(s, s0, u == 0u); }
        acc += term;
        src += stride;
        idx += step;
        if (idx >= n4) { idx -= n4; }
    }
    if (!inverse) { acc *= select(s, s0, a == 0u); }
    y[e] = acc;
}

@compute @workgroup_size(WG)
fn dct2_grid_axis(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    grid_axis(gid.x + gid.y * nwg.x * WG, false);
}

@compute @workgroup_size(WG)
fn dct3_grid_axis(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    grid_axis(gid.x + gid.y * nwg.x * WG, true);
}
