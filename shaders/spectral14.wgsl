// The fused MoPPA filter kernels specialised to a 14×14 grid (ViT-B/16 at 224 px: the common
// and benchmarked case). Same maths, layouts and bindings as moppa_fused / moppa_fused_grad in
// shaders/spectral.wgsl (see there); host: src/ops/spectral/mod.rs; twin:
// reference::spectral::moppa_filter(_grads).
//
// The difference is the shape of the code: one batch element per workgroup, each 14-point
// transform written out as straight-line code with constant indices, and no pass inside a
// loop, a divergent branch or after an early return (idle invocations work on a clamped line
// and skip their stores; the host's grid is exact, and a workgroup beyond it would only redo
// the last tile, so the tail "guard" is a clamp). Compilers then keep the lines in registers,
// and every invocation reads a matrix entry at the same address at the same time, which
// llvmpipe turns into one broadcast load; with the loops or an early return it falls back to
// per-invocation loads and runs 2-3x slower.
// C_h = C_w = C, so one 14×14 matrix lives at sm[0..196], the grid after it (then x's grid).
// moppa_fused14: inputs x [B·T·C], r [196·C], tables [4·14 + 4·14]; output y [B·T·C].
// moppa_fused_grad14: inputs x, dy, r, tables; outputs dx [B·T·C] (written when p.want_dx;
//   otherwise a placeholder, and r is a placeholder too) and dr_part [B·196·C], the ∂r of
//   each batch element (the host sums them).

const WG_FWD: u32 = 64u;
const WG_BWD: u32 = 32u;
const L: u32 = 14u;
const CELLS: u32 = 196u;
const SMEM: u32 = 4096u;

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

alias Line = array<vec4<f32>, 14>;

// C[k, n] = s_k · cos(π (2n+1) k / 28) from the table of cos(π m / 28), m < 56.
fn matrix_entry(e: u32, table_value: f32) -> f32 {
    return select(p.sh, p.s0h, e / L == 0u) * table_value;
}

fn table_index(e: u32) -> u32 {
    return ((2u * (e % L) + 1u) * (e / L)) % (4u * L);
}

// Row k of C v, or of Cᵀ v when `inverse`.
fn row(k: u32, inverse: bool, x: Line) -> vec4<f32> {
    let a = select(k * L, k, inverse);
    let s = select(1u, L, inverse);
    return sm[a] * x[0] +
        sm[a + s] * x[1] +
        sm[a + 2u * s] * x[2] +
        sm[a + 3u * s] * x[3] +
        sm[a + 4u * s] * x[4] +
        sm[a + 5u * s] * x[5] +
        sm[a + 6u * s] * x[6] +
        sm[a + 7u * s] * x[7] +
        sm[a + 8u * s] * x[8] +
        sm[a + 9u * s] * x[9] +
        sm[a + 10u * s] * x[10] +
        sm[a + 11u * s] * x[11] +
        sm[a + 12u * s] * x[12] +
        sm[a + 13u * s] * x[13];
}

fn transform(x: Line, inverse: bool) -> Line {
    return Line(
        row(0u, inverse, x),
        row(1u, inverse, x),
        row(2u, inverse, x),
        row(3u, inverse, x),
        row(4u, inverse, x),
        row(5u, inverse, x),
        row(6u, inverse, x),
        row(7u, inverse, x),
        row(8u, inverse, x),
        row(9u, inverse, x),
        row(10u, inverse, x),
        row(11u, inverse, x),
        row(12u, inverse, x),
        row(13u, inverse, x)
    );
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
fn moppa_fused14(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = min(wid.x * p.ct, (p.channels - 1u) / p.ct * p.ct);
    let b = min(wid.y, p.batch - 1u);
    let live_ct = min(p.ct, p.channels - c0);
    for (var e = lid; e < p.prefix * live_ct; e += WG_FWD) {
        let o = (b * p.tokens + e / live_ct) * p.channels + c0 + e % live_ct;
        f_y[o] = f_x[o];
    }
    for (var e = lid; e < CELLS; e += WG_FWD) { sm[e] = matrix_entry(e, f_tables[table_index(e)]); }
    let quads = p.ct / 4u;
    let q = lid % quads;
    let mine = lid / quads < L;
    let line = min(lid / quads, L - 1u);
    let ch = c0 + 4u * q;
    let chs = quad_channels(ch);
    let live = quad_live(ch);
    var v: Line;
    for (var j = 0u; j < L; j++) {
        let t = token(b, line * L + j, 0u);
        v[j] = select(vec4(0.0), vec4(f_x[t + chs.x], f_x[t + chs.y], f_x[t + chs.z], f_x[t + chs.w]), live);
    }
    workgroupBarrier();
    v = transform(v, false);
    if (mine) { for (var k = 0u; k < L; k++) { store4(CELLS, line * L + k, q, v[k]); } }
    workgroupBarrier();
    // Only owners read the column: an idle invocation's clamped `line` is another's, which
    // its owner rewrites below without a barrier in between.
    if (mine) { for (var n = 0u; n < L; n++) { v[n] = load4(CELLS, n * L + line, q); } }
    v = transform(v, false);
    for (var k = 0u; k < L; k++) {
        let o = (k * L + line) * p.channels;
        v[k] *= select(vec4(0.0), vec4(f_r[o + chs.x], f_r[o + chs.y], f_r[o + chs.z], f_r[o + chs.w]), live);
    }
    v = transform(v, true);
    if (mine) { for (var n = 0u; n < L; n++) { store4(CELLS, n * L + line, q, v[n]); } }
    workgroupBarrier();
    for (var j = 0u; j < L; j++) { v[j] = load4(CELLS, line * L + j, q); }
    v = transform(v, true);
    if (mine) {
        for (var k = 0u; k < L; k++) {
            let t = token(b, line * L + k, ch);
            for (var i = 0u; i < 4u; i++) {
                if (live[i]) { f_y[t + i] = v[k][i]; }
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
fn moppa_fused_grad14(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c0 = min(wid.x * p.ct, (p.channels - 1u) / p.ct * p.ct);
    let b = min(wid.y, p.batch - 1u);
    let want_dx = p.want_dx != 0u;
    let live_ct = min(p.ct, p.channels - c0);
    if (want_dx) {
        for (var e = lid; e < p.prefix * live_ct; e += WG_BWD) {
            let o = (b * p.tokens + e / live_ct) * p.channels + c0 + e % live_ct;
            g_dx[o] = g_dy[o];
        }
    }
    for (var e = lid; e < CELLS; e += WG_BWD) { sm[e] = matrix_entry(e, g_tables[table_index(e)]); }
    let quads = p.ct / 4u;
    let q = lid % quads;
    let mine = lid / quads < L;
    let line = min(lid / quads, L - 1u);
    let ch = c0 + 4u * q;
    let chs = quad_channels(ch);
    let live = quad_live(ch);
    let xg = CELLS + CELLS * p.ct;
    var g: Line;
    var u: Line;
    for (var j = 0u; j < L; j++) {
        let t = token(b, line * L + j, 0u);
        g[j] = select(vec4(0.0), vec4(g_dy[t + chs.x], g_dy[t + chs.y], g_dy[t + chs.z], g_dy[t + chs.w]), live);
        u[j] = select(vec4(0.0), vec4(g_x[t + chs.x], g_x[t + chs.y], g_x[t + chs.z], g_x[t + chs.w]), live);
    }
    workgroupBarrier();
    g = transform(g, false);
    u = transform(u, false);
    if (mine) {
        for (var k = 0u; k < L; k++) {
            store4(CELLS, line * L + k, q, g[k]);
            store4(xg, line * L + k, q, u[k]);
        }
    }
    workgroupBarrier();
    // Only owners read the column (see moppa_fused14).
    if (mine) {
        for (var n = 0u; n < L; n++) {
            g[n] = load4(CELLS, n * L + line, q);
            u[n] = load4(xg, n * L + line, q);
        }
    }
    g = transform(g, false);
    u = transform(u, false);
    if (mine) {
        for (var k = 0u; k < L; k++) {
            let o = (b * CELLS + k * L + line) * p.channels + ch;
            let d = u[k] * g[k];
            for (var i = 0u; i < 4u; i++) {
                if (live[i]) { g_dr[o + i] = d[i]; }
            }
        }
    }
    for (var k = 0u; k < L; k++) {
        let o = (k * L + line) * p.channels;
        let r = vec4(g_r[o + chs.x], g_r[o + chs.y], g_r[o + chs.z], g_r[o + chs.w]);
        g[k] *= select(vec4(0.0), r, live & vec4(want_dx));
    }
    g = transform(g, true);
    if (mine) { for (var n = 0u; n < L; n++) { store4(CELLS, n * L + line, q, g[n]); } }
    workgroupBarrier();
    for (var j = 0u; j < L; j++) { g[j] = load4(CELLS, line * L + j, q); }
    g = transform(g, true);
    if (mine && want_dx) {
        for (var k = 0u; k < L; k++) {
            let t = token(b, line * L + k, ch);
            for (var i = 0u; i < 4u; i++) {
                if (live[i]) { g_dx[t + i] = g[k][i]; }
            }
        }
    }
}
