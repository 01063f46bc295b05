// The MoPPA spectral filter (host: src/ops/spectral.rs; twins: src/reference/spectral.rs).
//
// Tokens x [B, T, C]: the first P = T − gh·gw tokens (CLS, prompts) are copied through, the
// rest form a row-major gh×gw grid. Per channel, with C_h, C_w the orthonormal DCT-II matrices,
//
//   y = C_hᵀ (r ⊙ (C_h x C_wᵀ)) C_w          r [gh, gw, C]
//
// The operator is symmetric, so ∂x is the same filter applied to ∂y, and
//   ∂r[n, m, c] = Σ_b DCT2(x_b)[n, m, c] · DCT2(∂y_b)[n, m, c].
//
// moppa_fused: one workgroup per (channel tile of p.ct channels, batch element). It builds
//   C_h and C_w in workgroup memory from the cosine tables, loads the tile's grid, does the
//   two forward passes, multiplies by r, the two inverse passes, and writes y once.
//   inputs x [B·T·C], r [gh·gw·C], tables [4gh + 4gw]; output y [B·T·C]; params FusedParams.
// moppa_fused_grad: one workgroup per (channel tile, chunk of p.per_chunk batch elements).
//   For each element: G = DCT2(∂y) kept in workgroup memory, X = DCT2(x) consumed as it is
//   made, ∂r accumulated in registers, then ∂x = IDCT2(G ⊙ r) (skipped when p.want_dx = 0;
//   then the ∂x binding is a placeholder and r is not read).
//   inputs x, dy [B·T·C], r [gh·gw·C], tables; outputs dx [B·T·C], dr_part [chunks·gh·gw·C].
//
// Workgroup memory (f32 words): C_h [gh²] | C_w [gw²] | A [gh·gw·ct] | B [gh·gw·ct]; the
// host picks ct so that all of it fits in SMEM words, and the unfused path otherwise.
// Inside the grid buffers element e is channel e % ct of grid cell e / ct, so neighbouring
// threads own neighbouring channels and global loads are contiguous runs of ct floats.

const WG: u32 = 256u;
const SMEM: u32 = 4096u;
// Grid elements per thread in moppa_fused_grad's registers: gh·gw·ct ≤ SMEM / 2.
const SLOTS: u32 = 8u;

struct FusedParams {
    batch: u32,
    tokens: u32,
    prefix: u32,
    gh: u32,
    gw: u32,
    channels: u32,
    ct: u32,
    per_chunk: u32,
    want_dx: u32,
    s0h: f32,
    sh: f32,
    s0w: f32,
    sw: f32,
}

var<immediate> p: FusedParams;
var<workgroup> sm: array<f32, SMEM>;

// Entry e of C_h (e < gh²) or C_w (after it): C[k, n] = s_k · cos(π (2n+1) k / (2N)) is
// `scale` times tables[index], the tables holding cos(π m / (2N)) for m < 4N (h, then w).
struct MatrixEntry {
    index: u32,
    scale: f32,
}

fn matrix_entry(e: u32) -> MatrixEntry {
    let hh = p.gh * p.gh;
    if (e < hh) {
        let k = e / p.gh;
        return MatrixEntry(((2u * (e % p.gh) + 1u) * k) % (4u * p.gh), select(p.sh, p.s0h, k == 0u));
    }
    let k = (e - hh) / p.gw;
    let n = (e - hh) % p.gw;
    return MatrixEntry(4u * p.gh + ((2u * n + 1u) * k) % (4u * p.gw), select(p.sw, p.s0w, k == 0u));
}

// Element e of the result of transforming buffer `src` along w: row i = cell / gw, output
// column k; C_w (forward) or C_wᵀ (inverse).
fn along_w(src: u32, e: u32, inverse: bool) -> f32 {
    let c = e % p.ct;
    let cell = e / p.ct;
    let i = cell / p.gw;
    let k = cell % p.gw;
    let mw = p.gh * p.gh;
    var acc = 0.0;
    for (var j = 0u; j < p.gw; j++) {
        let m = select(k * p.gw + j, j * p.gw + k, inverse);
        acc += sm[mw + m] * sm[src + (i * p.gw + j) * p.ct + c];
    }
    return acc;
}

// Element e of the result of transforming buffer `src` along h: column l = cell % gw, output
// row k; C_h (forward) or C_hᵀ (inverse).
fn along_h(src: u32, e: u32, inverse: bool) -> f32 {
    let c = e % p.ct;
    let cell = e / p.ct;
    let k = cell / p.gw;
    let l = cell % p.gw;
    var acc = 0.0;
    for (var n = 0u; n < p.gh; n++) {
        let m = select(k * p.gh + n, n * p.gh + k, inverse);
        acc += sm[m] * sm[src + (n * p.gw + l) * p.ct + c];
    }
    return acc;
}

// Offset in a [B·T·C] token tensor of grid element e of this tile, batch element b.
fn token_at(b: u32, c0: u32, e: u32) -> u32 {
    return (b * p.tokens + p.prefix + e / p.ct) * p.channels + c0 + e % p.ct;
}

@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read> f_r: array<f32>;
@group(0) @binding(2) var<storage, read> f_tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;

@compute @workgroup_size(WG)
fn moppa_fused(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = wid.x * p.ct;
    let b = wid.y;
    if (c0 >= p.channels || b >= p.batch) { return; }
    let ct = min(p.ct, p.channels - c0);
    for (var e = lid; e < p.prefix * ct; e += WG) {
        let at = (b * p.tokens + e / ct) * p.channels + c0 + e % ct;
        f_y[at] = f_x[at];
    }
    let n = p.gh * p.gw * p.ct;
    let a = p.gh * p.gh + p.gw * p.gw;
    for (var e = lid; e < a; e += WG) {
        let m = matrix_entry(e);
        sm[e] = m.scale * f_tables[m.index];
    }
    let bb = a + n;
    for (var e = lid; e < n; e += WG) {
        sm[a + e] = select(0.0, f_x[token_at(b, c0, e)], e % p.ct < ct);
    }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) { sm[bb + e] = along_w(a, e, false); }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) {
        let r = select(0.0, f_r[(e / p.ct) * p.channels + c0 + e % p.ct], e % p.ct < ct);
        sm[a + e] = r * along_h(bb, e, false);
    }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) { sm[bb + e] = along_w(a, e, true); }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) {
        if (e % p.ct < ct) { f_y[token_at(b, c0, e)] = along_h(bb, e, true); }
    }
}

@group(0) @binding(0) var<storage, read> g_x: array<f32>;
@group(0) @binding(1) var<storage, read> g_dy: array<f32>;
@group(0) @binding(2) var<storage, read> g_r: array<f32>;
@group(0) @binding(3) var<storage, read> g_tables: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_dr: array<f32>;

// Transform of x along w for grid element e, reading x straight from global memory.
fn x_along_w(b: u32, c0: u32, e: u32) -> f32 {
    let c = e % p.ct;
    let cell = e / p.ct;
    let i = cell / p.gw;
    let k = cell % p.gw;
    let mw = p.gh * p.gh;
    let row = (b * p.tokens + p.prefix + i * p.gw) * p.channels + c0 + c;
    var acc = 0.0;
    for (var j = 0u; j < p.gw; j++) {
        acc += sm[mw + k * p.gw + j] * g_x[row + j * p.channels];
    }
    return acc;
}

@compute @workgroup_size(WG)
fn moppa_fused_grad(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = wid.x * p.ct;
    let chunk = wid.y;
    let b_first = chunk * p.per_chunk;
    if (c0 >= p.channels || b_first >= p.batch) { return; }
    let ct = min(p.ct, p.channels - c0);
    let b_end = min(p.batch, b_first + p.per_chunk);
    let n = p.gh * p.gw * p.ct;
    let a = p.gh * p.gh + p.gw * p.gw;
    for (var e = lid; e < a; e += WG) {
        let m = matrix_entry(e);
        sm[e] = m.scale * g_tables[m.index];
    }
    let bb = a + n;
    var acc: array<f32, SLOTS>;
    for (var b = b_first; b < b_end; b++) {
        for (var e = lid; e < n; e += WG) {
            sm[a + e] = select(0.0, g_dy[token_at(b, c0, e)], e % p.ct < ct);
        }
        workgroupBarrier();
        for (var e = lid; e < n; e += WG) { sm[bb + e] = along_w(a, e, false); }
        workgroupBarrier();
        for (var e = lid; e < n; e += WG) { sm[a + e] = along_h(bb, e, false); }
        workgroupBarrier();
        // A = DCT2(∂y); now B = x transformed along w (zero outside the tile's channels).
        for (var e = lid; e < n; e += WG) {
            sm[bb + e] = select(0.0, x_along_w(b, c0, e), e % p.ct < ct);
        }
        workgroupBarrier();
        for (var s = 0u; s < SLOTS; s++) {
            let e = lid + s * WG;
            if (e < n) {
                acc[s] += along_h(bb, e, false) * sm[a + e];
                if (p.want_dx != 0u && e % p.ct < ct) {
                    sm[a + e] *= g_r[(e / p.ct) * p.channels + c0 + e % p.ct];
                }
            }
        }
        workgroupBarrier();
        if (p.want_dx != 0u) {
            for (var e = lid; e < p.prefix * ct; e += WG) {
                let at = (b * p.tokens + e / ct) * p.channels + c0 + e % ct;
                g_dx[at] = g_dy[at];
            }
            for (var e = lid; e < n; e += WG) { sm[bb + e] = along_w(a, e, true); }
            workgroupBarrier();
            for (var e = lid; e < n; e += WG) {
                if (e % p.ct < ct) { g_dx[token_at(b, c0, e)] = along_h(bb, e, true); }
            }
        }
        // The next element's first write (A) happens after every read of A above; its first
        // write of B comes after the barrier that follows its load, so B's readers are done.
    }
    for (var s = 0u; s < SLOTS; s++) {
        let e = lid + s * WG;
        if (e < n && e % p.ct < ct) {
            g_dr[(chunk * p.gh * p.gw + e / p.ct) * p.channels + c0 + e % p.ct] = acc[s];
        }
    }
}

// The unfused path's pieces, one thread per output element (1-D grid, folded).
// grid_scale:      y[b, t, c] = x[b, t, c] · r[t − P, c] on grid tokens, x on prefix tokens.
//                  inputs x [B·T·C], r [gh·gw·C]; output y; params GridOpParams.
// grid_mul_reduce: out[cell, c] = Σ_b u[b, P + cell, c] · v[b, P + cell, c].
//                  inputs u, v [B·T·C]; output out [gh·gw·C].
// sum_chunks:      out[i] = Σ_k part[k · len + i] over k < o.batch chunks.
//                  input part [chunks·len]; output out [len] (len = o.total).

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
