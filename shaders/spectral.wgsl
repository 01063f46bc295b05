// The MoPPA spectral filter (host: src/ops/spectral/mod.rs; twins: src/reference/spectral.rs).
//
// Tokens x [B, T, C]: the first P = T − gh·gw tokens (CLS, prompts) are copied through, the
// rest form a row-major gh×gw grid. Per channel, with C_h, C_w the orthonormal DCT-II matrices,
//
//   y = C_hᵀ (r ⊙ (C_h x C_wᵀ)) C_w          r [gh, gw, C]
//
// The operator is symmetric, so ∂x is the same filter applied to ∂y, and
//   ∂r[n, m, c] = Σ_b DCT2(x_b)[n, m, c] · DCT2(∂y_b)[n, m, c].
//
// Fused kernels. A workgroup owns a tile of p.ct channels (a multiple of 4) and a chunk of
// p.per_chunk batch elements; C_h and C_w are built in workgroup memory from the cosine
// tables. An invocation owns four neighbouring channels (quad lid % (ct/4)) of one line
// (lid / (ct/4)): a grid row in the passes along w, a column in the pass along h. A pass
// reads its lines into registers, applies the small matrices (every invocation reads the
// same entry at the same time) and writes the lines back in place. As ⊙r is elementwise,
// the forward and inverse transforms along h share one column pass:
//   rows:    x row (global) → C_w → grid
//   columns: grid column → C_h → ⊙ r → C_hᵀ → grid
//   rows:    grid row → C_wᵀ → y row (global)
// moppa_fused: inputs x [B·T·C], r [gh·gw·C], tables [4gh + 4gw]; output y [B·T·C].
// moppa_fused_grad: the same passes on ∂y give ∂x (skipped when p.want_dx = 0: then the ∂x
//   binding is a placeholder and r is not read); the first row pass also transforms x into
//   a second grid, and the column pass accumulates ∂r += DCT2(x) ⊙ DCT2(∂y) in registers.
//   inputs x, dy [B·T·C], r [gh·gw·C], tables; outputs dx [B·T·C], dr_part [chunks·gh·gw·C].
// Workgroup memory (f32 words): C_h [gh²] | C_w [gw²] | grid [gh·gw·ct] (| x grid). The host
// picks ct so that this fits in SMEM words and lines · ct/4 ≤ the workgroup size, and sends
// other grids (or a side above MAXL) to the unfused path.

const WG_FWD: u32 = 64u;
const WG_BWD: u32 = 32u;
const SMEM: u32 = 4096u;
const MAXL: u32 = 32u;

// Host: ops::spectral::FusedParams.
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

alias Line = array<vec4<f32>, MAXL>;

// Word e of C_h (e < gh²) then C_w: C[k, n] = s_k · cos(π (2n+1) k / (2N)) is `scale` times
// tables[index], the tables holding cos(π m / (2N)) for m < 4N (the h table, then the w one).
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

// out = M v, or Mᵀ v when `inverse`, for the len×len matrix at sm[m..]; four outputs per
// sweep over v (rows past len repeat the last one and land in unused slots).
fn transform(v: ptr<function, Line>, out: ptr<function, Line>, m: u32, len: u32, inverse: bool) {
    let sk = select(len, 1u, inverse);
    let sj = select(1u, len, inverse);
    for (var k = 0u; k < len; k += 4u) {
        let r1 = min(k + 1u, len - 1u) * sk;
        let r2 = min(k + 2u, len - 1u) * sk;
        let r3 = min(k + 3u, len - 1u) * sk;
        var a0 = vec4(0.0);
        var a1 = vec4(0.0);
        var a2 = vec4(0.0);
        var a3 = vec4(0.0);
        for (var j = 0u; j < len; j++) {
            let vj = (*v)[j];
            let c = m + j * sj;
            a0 += sm[c + k * sk] * vj;
            a1 += sm[c + r1] * vj;
            a2 += sm[c + r2] * vj;
            a3 += sm[c + r3] * vj;
        }
        (*out)[k] = a0;
        (*out)[min(k + 1u, MAXL - 1u)] = a1;
        (*out)[min(k + 2u, MAXL - 1u)] = a2;
        (*out)[min(k + 3u, MAXL - 1u)] = a3;
    }
}

fn load4(buf: u32, cell: u32, q: u32) -> vec4<f32> {
    let o = buf + cell * p.ct + 4u * q;
    return vec4(sm[o], sm[o + 1u], sm[o + 2u], sm[o + 3u]);
}

fn store4(buf: u32, cell: u32, q: u32, v: vec4<f32>) {
    let o = buf + cell * p.ct + 4u * q;
    sm[o] = v.x;
    sm[o + 1u] = v.y;
    sm[o + 2u] = v.z;
    sm[o + 3u] = v.w;
}

// Offset in a [B·T·C] token tensor of grid cell `cell`, channel `ch`, batch element b.
fn token(b: u32, cell: u32, ch: u32) -> u32 {
    return (b * p.tokens + p.prefix + cell) * p.channels + ch;
}

// The quad's channels ch..ch+3 clamped into range (for loads), and which of them exist.
fn quad_channels(ch: u32) -> vec4<u32> {
    return min(vec4(ch) + vec4(0u, 1u, 2u, 3u), vec4(p.channels - 1u));
}

fn quad_live(ch: u32) -> vec4<bool> {
    return vec4(ch) + vec4(0u, 1u, 2u, 3u) < vec4(p.channels);
}

@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read> f_r: array<f32>;
@group(0) @binding(2) var<storage, read> f_tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;

@compute @workgroup_size(WG_FWD)
fn moppa_fused(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = wid.x * p.ct;
    let b_first = wid.y * p.per_chunk;
    if (c0 >= p.channels || b_first >= p.batch) { return; }
    let b_end = min(p.batch, b_first + p.per_chunk);
    let mats = p.gh * p.gh + p.gw * p.gw;
    for (var e = lid; e < mats; e += WG_FWD) {
        let m = matrix_entry(e);
        sm[e] = m.scale * f_tables[m.index];
    }
    let quads = p.ct / 4u;
    let q = lid % quads;
    let line = lid / quads;
    let ch = c0 + 4u * q;
    let chs = quad_channels(ch);
    let live = quad_live(ch);
    let mw = p.gh * p.gh;
    var v: Line;
    var out: Line;
    var r: Line;
    if (line < p.gw) {
        for (var k = 0u; k < p.gh; k++) {
            let o = (k * p.gw + line) * p.channels;
            r[k] = select(vec4(0.0), vec4(f_r[o + chs.x], f_r[o + chs.y], f_r[o + chs.z], f_r[o + chs.w]), live);
        }
    }
    let live_ct = min(p.ct, p.channels - c0);
    for (var b = b_first; b < b_end; b++) {
        for (var e = lid; e < p.prefix * live_ct; e += WG_FWD) {
            let o = (b * p.tokens + e / live_ct) * p.channels + c0 + e % live_ct;
            f_y[o] = f_x[o];
        }
        workgroupBarrier();
        if (line < p.gh) {
            for (var j = 0u; j < p.gw; j++) {
                let t = token(b, line * p.gw + j, 0u);
                v[j] = select(vec4(0.0), vec4(f_x[t + chs.x], f_x[t + chs.y], f_x[t + chs.z], f_x[t + chs.w]), live);
            }
            transform(&v, &out, mw, p.gw, false);
            for (var k = 0u; k < p.gw; k++) { store4(mats, line * p.gw + k, q, out[k]); }
        }
        workgroupBarrier();
        if (line < p.gw) {
            for (var n = 0u; n < p.gh; n++) { v[n] = load4(mats, n * p.gw + line, q); }
            transform(&v, &out, 0u, p.gh, false);
            for (var k = 0u; k < p.gh; k++) { out[k] *= r[k]; }
            transform(&out, &v, 0u, p.gh, true);
            for (var n = 0u; n < p.gh; n++) { store4(mats, n * p.gw + line, q, v[n]); }
        }
        workgroupBarrier();
        if (line < p.gh) {
            for (var j = 0u; j < p.gw; j++) { v[j] = load4(mats, line * p.gw + j, q); }
            transform(&v, &out, mw, p.gw, true);
            for (var k = 0u; k < p.gw; k++) {
                let t = token(b, line * p.gw + k, ch);
                for (var i = 0u; i < 4u; i++) {
                    if (live[i]) { f_y[t + i] = out[k][i]; }
                }
            }
        }
    }
}

@group(0) @binding(0) var<storage, read> g_x: array<f32>;
@group(0) @binding(1) var<storage, read> g_dy: array<f32>;
@group(0) @binding(2) var<storage, read> g_r: array<f32>;
@group(0) @binding(3) var<storage, read> g_tables: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_dr: array<f32>;

@compute @workgroup_size(WG_BWD)
fn moppa_fused_grad(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = wid.x * p.ct;
    let chunk = wid.y;
    let b_first = chunk * p.per_chunk;
    if (c0 >= p.channels || b_first >= p.batch) { return; }
    let b_end = min(p.batch, b_first + p.per_chunk);
    let mats = p.gh * p.gh + p.gw * p.gw;
    for (var e = lid; e < mats; e += WG_BWD) {
        let m = matrix_entry(e);
        sm[e] = m.scale * g_tables[m.index];
    }
    let quads = p.ct / 4u;
    let q = lid % quads;
    let line = lid / quads;
    let ch = c0 + 4u * q;
    let chs = quad_channels(ch);
    let live = quad_live(ch);
    let mw = p.gh * p.gh;
    let xg = mats + p.gh * p.gw * p.ct;
    let want_dx = p.want_dx != 0u;
    var v: Line;
    var out: Line;
    var g: Line;
    var r: Line;
    var acc: Line;
    if (want_dx && line < p.gw) {
        for (var k = 0u; k < p.gh; k++) {
            let o = (k * p.gw + line) * p.channels;
            r[k] = select(vec4(0.0), vec4(g_r[o + chs.x], g_r[o + chs.y], g_r[o + chs.z], g_r[o + chs.w]), live);
        }
    }
    let live_ct = min(p.ct, p.channels - c0);
    for (var b = b_first; b < b_end; b++) {
        if (want_dx) {
            for (var e = lid; e < p.prefix * live_ct; e += WG_BWD) {
                let o = (b * p.tokens + e / live_ct) * p.channels + c0 + e % live_ct;
                g_dx[o] = g_dy[o];
            }
        }
        workgroupBarrier();
        if (line < p.gh) {
            for (var j = 0u; j < p.gw; j++) {
                let t = token(b, line * p.gw + j, 0u);
                v[j] = select(vec4(0.0), vec4(g_dy[t + chs.x], g_dy[t + chs.y], g_dy[t + chs.z], g_dy[t + chs.w]), live);
            }
            transform(&v, &out, mw, p.gw, false);
            for (var k = 0u; k < p.gw; k++) { store4(mats, line * p.gw + k, q, out[k]); }
            for (var j = 0u; j < p.gw; j++) {
                let t = token(b, line * p.gw + j, 0u);
                v[j] = select(vec4(0.0), vec4(g_x[t + chs.x], g_x[t + chs.y], g_x[t + chs.z], g_x[t + chs.w]), live);
            }
            transform(&v, &out, mw, p.gw, false);
            for (var k = 0u; k < p.gw; k++) { store4(xg, line * p.gw + k, q, out[k]); }
        }
        workgroupBarrier();
        if (line < p.gw) {
            for (var n = 0u; n < p.gh; n++) { v[n] = load4(mats, n * p.gw + line, q); }
            transform(&v, &g, 0u, p.gh, false);
            for (var n = 0u; n < p.gh; n++) { v[n] = load4(xg, n * p.gw + line, q); }
            transform(&v, &out, 0u, p.gh, false);
            for (var k = 0u; k < p.gh; k++) {
                acc[k] += out[k] * g[k];
                g[k] *= r[k];
            }
            if (want_dx) {
                transform(&g, &v, 0u, p.gh, true);
                for (var n = 0u; n < p.gh; n++) { store4(mats, n * p.gw + line, q, v[n]); }
            }
        }
        workgroupBarrier();
        if (want_dx && line < p.gh) {
            for (var j = 0u; j < p.gw; j++) { v[j] = load4(mats, line * p.gw + j, q); }
            transform(&v, &out, mw, p.gw, true);
            for (var k = 0u; k < p.gw; k++) {
                let t = token(b, line * p.gw + k, ch);
                for (var i = 0u; i < 4u; i++) {
                    if (live[i]) { g_dx[t + i] = out[k][i]; }
                }
            }
        }
    }
    if (line < p.gw) {
        for (var k = 0u; k < p.gh; k++) {
            let o = (chunk * p.gh * p.gw + k * p.gw + line) * p.channels + ch;
            for (var i = 0u; i < 4u; i++) {
                if (live[i]) { g_dr[o + i] = acc[k][i]; }
            }
        }
    }
}
