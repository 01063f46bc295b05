// The MoPPA spectral filter for CPU adapters (lavapipe): the maths of spectral.wgsl,
//
//   y = C_hᵀ (r ⊙ (C_h x C_wᵀ)) C_w     per channel, on the gh × gw grid tokens of x [B, T, C]
//
// (prefix tokens copied), or with p.mode = 1 only the spectrum C_h x C_wᵀ (the backward
// needs DCT2(x) and DCT2(∂y); ∂x is the filter applied to ∂y). For grids up to 16 × 16 and
// C % 4 = 0 (host: ops::spectral).
//
// Why this shape: a CPU driver runs a workgroup's invocations as SIMD lanes, every load
// costs tens of instructions and register arrays stay in registers only under constant
// indices. So each lane owns one quad of channels of one image and keeps its whole 16 × 16
// spectrum z in registers (channels are contiguous in memory, so a lane's loads are vec4s
// and the 8 lanes of a workgroup read 32 neighbouring channels). Grid rows stream in: row
// n is transformed along w by C_w (held in registers, loaded once) and added into z with
// the column n of C_h (16 uniform loads per row). The inverse streams rows out the same
// way. Sizes below 16 are zero-padded: coefficients outside the N × N matrices are zero.
// Lanes past the last quad repeat it and store the same values to the same place.
//
// Layout: inputs x [B·T·C] and r [gh·gw·C] as vec4s (r unused when mode = 1; it may alias
// x), tables [4gh + 4gw] (cos(π m / 2N) for m < 4N, h then w); output y [B·T·C] as vec4s.
// Params `SpectralRowsParams` (host: ops::spectral::SpectralRowsParams). Grid [⌈C/32⌉, B, 1].

struct SpectralRowsParams {
    batch: u32,
    tokens: u32,
    prefix: u32,
    gh: u32,
    gw: u32,
    c4: u32,
    mode: u32,
    s0h: f32,
    sh: f32,
    s0w: f32,
    sw: f32,
}

const LANES: u32 = 8u;

var<immediate> p: SpectralRowsParams;

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> r: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;

// C_h[k][n] (along_h) or C_w[k][n] = s_k · cos(π (2n + 1) k / 2N); zero outside N × N.
fn coef(along_h: bool, k: u32, n: u32) -> f32 {
    let len = select(p.gw, p.gh, along_h);
    let off = select(4u * p.gh, 0u, along_h);
    let s = select(select(p.sw, p.s0w, k == 0u), select(p.sh, p.s0h, k == 0u), along_h);
    let at = off + ((2u * min(n, len - 1u) + 1u) * min(k, len - 1u)) % (4u * len);
    return select(0.0, s * tables[at], k < len && n < len);
}

// Row k of C_w into cw[16k ..].
fn cw_row(cw: ptr<function, array<f32, 256>>, k: u32) {
    (*cw)[16u * k + 0u] = coef(false, k, 0u); (*cw)[16u * k + 1u] = coef(false, k, 1u); (*cw)[16u * k + 2u] = coef(false, k, 2u); (*cw)[16u * k + 3u] = coef(false, k, 3u);
    (*cw)[16u * k + 4u] = coef(false, k, 4u); (*cw)[16u * k + 5u] = coef(false, k, 5u); (*cw)[16u * k + 6u] = coef(false, k, 6u); (*cw)[16u * k + 7u] = coef(false, k, 7u);
    (*cw)[16u * k + 8u] = coef(false, k, 8u); (*cw)[16u * k + 9u] = coef(false, k, 9u); (*cw)[16u * k + 10u] = coef(false, k, 10u); (*cw)[16u * k + 11u] = coef(false, k, 11u);
    (*cw)[16u * k + 12u] = coef(false, k, 12u); (*cw)[16u * k + 13u] = coef(false, k, 13u); (*cw)[16u * k + 14u] = coef(false, k, 14u); (*cw)[16u * k + 15u] = coef(false, k, 15u);
}

// Column n of C_h: ch[k] = C_h[k][n].
fn ch_col(ch: ptr<function, array<f32, 16>>, n: u32) {
    (*ch)[0u] = coef(true, 0u, n); (*ch)[1u] = coef(true, 1u, n); (*ch)[2u] = coef(true, 2u, n); (*ch)[3u] = coef(true, 3u, n);
    (*ch)[4u] = coef(true, 4u, n); (*ch)[5u] = coef(true, 5u, n); (*ch)[6u] = coef(true, 6u, n); (*ch)[7u] = coef(true, 7u, n);
    (*ch)[8u] = coef(true, 8u, n); (*ch)[9u] = coef(true, 9u, n); (*ch)[10u] = coef(true, 10u, n); (*ch)[11u] = coef(true, 11u, n);
    (*ch)[12u] = coef(true, 12u, n); (*ch)[13u] = coef(true, 13u, n); (*ch)[14u] = coef(true, 14u, n); (*ch)[15u] = coef(true, 15u, n);
}

// Σ_m cw[16k + m] · v[m]  (row k of C_w times v).
fn row_dot(cw: ptr<function, array<f32, 256>>, k: u32, v: ptr<function, array<vec4<f32>, 16>>) -> vec4<f32> {
    var s = (*cw)[16u * k] * (*v)[0u];
    s = fma(vec4((*cw)[16u * k + 1u]), (*v)[1u], s); s = fma(vec4((*cw)[16u * k + 2u]), (*v)[2u], s); s = fma(vec4((*cw)[16u * k + 3u]), (*v)[3u], s);
    s = fma(vec4((*cw)[16u * k + 4u]), (*v)[4u], s); s = fma(vec4((*cw)[16u * k + 5u]), (*v)[5u], s); s = fma(vec4((*cw)[16u * k + 6u]), (*v)[6u], s);
    s = fma(vec4((*cw)[16u * k + 7u]), (*v)[7u], s); s = fma(vec4((*cw)[16u * k + 8u]), (*v)[8u], s); s = fma(vec4((*cw)[16u * k + 9u]), (*v)[9u], s);
    s = fma(vec4((*cw)[16u * k + 10u]), (*v)[10u], s); s = fma(vec4((*cw)[16u * k + 11u]), (*v)[11u], s); s = fma(vec4((*cw)[16u * k + 12u]), (*v)[12u], s);
    s = fma(vec4((*cw)[16u * k + 13u]), (*v)[13u], s); s = fma(vec4((*cw)[16u * k + 14u]), (*v)[14u], s); s = fma(vec4((*cw)[16u * k + 15u]), (*v)[15u], s);
    return s;
}

// Σ_l cw[16l + m] · v[l]  (column m of C_w times v: the inverse along w).
fn col_dot(cw: ptr<function, array<f32, 256>>, m: u32, v: ptr<function, array<vec4<f32>, 16>>) -> vec4<f32> {
    var s = (*cw)[m] * (*v)[0u];
    s = fma(vec4((*cw)[16u * 1u + m]), (*v)[1u], s); s = fma(vec4((*cw)[16u * 2u + m]), (*v)[2u], s); s = fma(vec4((*cw)[16u * 3u + m]), (*v)[3u], s);
    s = fma(vec4((*cw)[16u * 4u + m]), (*v)[4u], s); s = fma(vec4((*cw)[16u * 5u + m]), (*v)[5u], s); s = fma(vec4((*cw)[16u * 6u + m]), (*v)[6u], s);
    s = fma(vec4((*cw)[16u * 7u + m]), (*v)[7u], s); s = fma(vec4((*cw)[16u * 8u + m]), (*v)[8u], s); s = fma(vec4((*cw)[16u * 9u + m]), (*v)[9u], s);
    s = fma(vec4((*cw)[16u * 10u + m]), (*v)[10u], s); s = fma(vec4((*cw)[16u * 11u + m]), (*v)[11u], s); s = fma(vec4((*cw)[16u * 12u + m]), (*v)[12u], s);
    s = fma(vec4((*cw)[16u * 13u + m]), (*v)[13u], s); s = fma(vec4((*cw)[16u * 14u + m]), (*v)[14u], s); s = fma(vec4((*cw)[16u * 15u + m]), (*v)[15u], s);
    return s;
}

// z[16k + l] += w · v[l].
fn axpy_row(z: ptr<function, array<vec4<f32>, 256>>, k: u32, w: f32, v: ptr<function, array<vec4<f32>, 16>>) {
    let ww = vec4(w);
    (*z)[16u * k + 0u] = fma(ww, (*v)[0u], (*z)[16u * k + 0u]); (*z)[16u * k + 1u] = fma(ww, (*v)[1u], (*z)[16u * k + 1u]);
    (*z)[16u * k + 2u] = fma(ww, (*v)[2u], (*z)[16u * k + 2u]); (*z)[16u * k + 3u] = fma(ww, (*v)[3u], (*z)[16u * k + 3u]);
    (*z)[16u * k + 4u] = fma(ww, (*v)[4u], (*z)[16u * k + 4u]); (*z)[16u * k + 5u] = fma(ww, (*v)[5u], (*z)[16u * k + 5u]);
    (*z)[16u * k + 6u] = fma(ww, (*v)[6u], (*z)[16u * k + 6u]); (*z)[16u * k + 7u] = fma(ww, (*v)[7u], (*z)[16u * k + 7u]);
    (*z)[16u * k + 8u] = fma(ww, (*v)[8u], (*z)[16u * k + 8u]); (*z)[16u * k + 9u] = fma(ww, (*v)[9u], (*z)[16u * k + 9u]);
    (*z)[16u * k + 10u] = fma(ww, (*v)[10u], (*z)[16u * k + 10u]); (*z)[16u * k + 11u] = fma(ww, (*v)[11u], (*z)[16u * k + 11u]);
    (*z)[16u * k + 12u] = fma(ww, (*v)[12u], (*z)[16u * k + 12u]); (*z)[16u * k + 13u] = fma(ww, (*v)[13u], (*z)[16u * k + 13u]);
    (*z)[16u * k + 14u] = fma(ww, (*v)[14u], (*z)[16u * k + 14u]); (*z)[16u * k + 15u] = fma(ww, (*v)[15u], (*z)[16u * k + 15u]);
}

// v[l] += w · z[16k + l].
fn axpy_from(v: ptr<function, array<vec4<f32>, 16>>, w: f32, z: ptr<function, array<vec4<f32>, 256>>, k: u32) {
    let ww = vec4(w);
    (*v)[0u] = fma(ww, (*z)[16u * k + 0u], (*v)[0u]); (*v)[1u] = fma(ww, (*z)[16u * k + 1u], (*v)[1u]);
    (*v)[2u] = fma(ww, (*z)[16u * k + 2u], (*v)[2u]); (*v)[3u] = fma(ww, (*z)[16u * k + 3u], (*v)[3u]);
    (*v)[4u] = fma(ww, (*z)[16u * k + 4u], (*v)[4u]); (*v)[5u] = fma(ww, (*z)[16u * k + 5u], (*v)[5u]);
    (*v)[6u] = fma(ww, (*z)[16u * k + 6u], (*v)[6u]); (*v)[7u] = fma(ww, (*z)[16u * k + 7u], (*v)[7u]);
    (*v)[8u] = fma(ww, (*z)[16u * k + 8u], (*v)[8u]); (*v)[9u] = fma(ww, (*z)[16u * k + 9u], (*v)[9u]);
    (*v)[10u] = fma(ww, (*z)[16u * k + 10u], (*v)[10u]); (*v)[11u] = fma(ww, (*z)[16u * k + 11u], (*v)[11u]);
    (*v)[12u] = fma(ww, (*z)[16u * k + 12u], (*v)[12u]); (*v)[13u] = fma(ww, (*z)[16u * k + 13u], (*v)[13u]);
    (*v)[14u] = fma(ww, (*z)[16u * k + 14u], (*v)[14u]); (*v)[15u] = fma(ww, (*z)[16u * k + 15u], (*v)[15u]);
}

// z[16k + l] *= r[cell (k, l)] for the lane's quad q (zero outside the grid).
fn scale_row(z: ptr<function, array<vec4<f32>, 256>>, k: u32, q: u32) {
    let kk = min(k, p.gh - 1u);
    let last = p.gw - 1u;
    (*z)[16u * k + 0u] *= select(vec4<f32>(), r[(kk * p.gw + min(0u, last)) * p.c4 + q], k < p.gh && 0u < p.gw);
    (*z)[16u * k + 1u] *= select(vec4<f32>(), r[(kk * p.gw + min(1u, last)) * p.c4 + q], k < p.gh && 1u < p.gw);
    (*z)[16u * k + 2u] *= select(vec4<f32>(), r[(kk * p.gw + min(2u, last)) * p.c4 + q], k < p.gh && 2u < p.gw);
    (*z)[16u * k + 3u] *= select(vec4<f32>(), r[(kk * p.gw + min(3u, last)) * p.c4 + q], k < p.gh && 3u < p.gw);
    (*z)[16u * k + 4u] *= select(vec4<f32>(), r[(kk * p.gw + min(4u, last)) * p.c4 + q], k < p.gh && 4u < p.gw);
    (*z)[16u * k + 5u] *= select(vec4<f32>(), r[(kk * p.gw + min(5u, last)) * p.c4 + q], k < p.gh && 5u < p.gw);
    (*z)[16u * k + 6u] *= select(vec4<f32>(), r[(kk * p.gw + min(6u, last)) * p.c4 + q], k < p.gh && 6u < p.gw);
    (*z)[16u * k + 7u] *= select(vec4<f32>(), r[(kk * p.gw + min(7u, last)) * p.c4 + q], k < p.gh && 7u < p.gw);
    (*z)[16u * k + 8u] *= select(vec4<f32>(), r[(kk * p.gw + min(8u, last)) * p.c4 + q], k < p.gh && 8u < p.gw);
    (*z)[16u * k + 9u] *= select(vec4<f32>(), r[(kk * p.gw + min(9u, last)) * p.c4 + q], k < p.gh && 9u < p.gw);
    (*z)[16u * k + 10u] *= select(vec4<f32>(), r[(kk * p.gw + min(10u, last)) * p.c4 + q], k < p.gh && 10u < p.gw);
    (*z)[16u * k + 11u] *= select(vec4<f32>(), r[(kk * p.gw + min(11u, last)) * p.c4 + q], k < p.gh && 11u < p.gw);
    (*z)[16u * k + 12u] *= select(vec4<f32>(), r[(kk * p.gw + min(12u, last)) * p.c4 + q], k < p.gh && 12u < p.gw);
    (*z)[16u * k + 13u] *= select(vec4<f32>(), r[(kk * p.gw + min(13u, last)) * p.c4 + q], k < p.gh && 13u < p.gw);
    (*z)[16u * k + 14u] *= select(vec4<f32>(), r[(kk * p.gw + min(14u, last)) * p.c4 + q], k < p.gh && 14u < p.gw);
    (*z)[16u * k + 15u] *= select(vec4<f32>(), r[(kk * p.gw + min(15u, last)) * p.c4 + q], k < p.gh && 15u < p.gw);
}

// Grid row n of token tensor x (image b, quad q) into v, zero past gw.
fn load_row(v: ptr<function, array<vec4<f32>, 16>>, at: u32) {
    let last = p.gw - 1u;
    (*v)[0u] = select(vec4<f32>(), x[at + min(0u, last) * p.c4], 0u < p.gw);
    (*v)[1u] = select(vec4<f32>(), x[at + min(1u, last) * p.c4], 1u < p.gw);
    (*v)[2u] = select(vec4<f32>(), x[at + min(2u, last) * p.c4], 2u < p.gw);
    (*v)[3u] = select(vec4<f32>(), x[at + min(3u, last) * p.c4], 3u < p.gw);
    (*v)[4u] = select(vec4<f32>(), x[at + min(4u, last) * p.c4], 4u < p.gw);
    (*v)[5u] = select(vec4<f32>(), x[at + min(5u, last) * p.c4], 5u < p.gw);
    (*v)[6u] = select(vec4<f32>(), x[at + min(6u, last) * p.c4], 6u < p.gw);
    (*v)[7u] = select(vec4<f32>(), x[at + min(7u, last) * p.c4], 7u < p.gw);
    (*v)[8u] = select(vec4<f32>(), x[at + min(8u, last) * p.c4], 8u < p.gw);
    (*v)[9u] = select(vec4<f32>(), x[at + min(9u, last) * p.c4], 9u < p.gw);
    (*v)[10u] = select(vec4<f32>(), x[at + min(10u, last) * p.c4], 10u < p.gw);
    (*v)[11u] = select(vec4<f32>(), x[at + min(11u, last) * p.c4], 11u < p.gw);
    (*v)[12u] = select(vec4<f32>(), x[at + min(12u, last) * p.c4], 12u < p.gw);
    (*v)[13u] = select(vec4<f32>(), x[at + min(13u, last) * p.c4], 13u < p.gw);
    (*v)[14u] = select(vec4<f32>(), x[at + min(14u, last) * p.c4], 14u < p.gw);
    (*v)[15u] = select(vec4<f32>(), x[at + min(15u, last) * p.c4], 15u < p.gw);
}

// Grid row of 16 values to y at `at` (grid columns past gw not stored).
fn store_row(v: ptr<function, array<vec4<f32>, 16>>, at: u32) {
    if (0u < p.gw) { y[at + 0u * p.c4] = (*v)[0u]; } if (1u < p.gw) { y[at + 1u * p.c4] = (*v)[1u]; }
    if (2u < p.gw) { y[at + 2u * p.c4] = (*v)[2u]; } if (3u < p.gw) { y[at + 3u * p.c4] = (*v)[3u]; }
    if (4u < p.gw) { y[at + 4u * p.c4] = (*v)[4u]; } if (5u < p.gw) { y[at + 5u * p.c4] = (*v)[5u]; }
    if (6u < p.gw) { y[at + 6u * p.c4] = (*v)[6u]; } if (7u < p.gw) { y[at + 7u * p.c4] = (*v)[7u]; }
    if (8u < p.gw) { y[at + 8u * p.c4] = (*v)[8u]; } if (9u < p.gw) { y[at + 9u * p.c4] = (*v)[9u]; }
    if (10u < p.gw) { y[at + 10u * p.c4] = (*v)[10u]; } if (11u < p.gw) { y[at + 11u * p.c4] = (*v)[11u]; }
    if (12u < p.gw) { y[at + 12u * p.c4] = (*v)[12u]; } if (13u < p.gw) { y[at + 13u * p.c4] = (*v)[13u]; }
    if (14u < p.gw) { y[at + 14u * p.c4] = (*v)[14u]; } if (15u < p.gw) { y[at + 15u * p.c4] = (*v)[15u]; }
}

// Row k of the identity into cw[16k ..] (the inverse along w when mode = 1).
fn identity_row(cw: ptr<function, array<f32, 256>>, k: u32) {
    (*cw)[16u * k + 0u] = select(0.0, 1.0, k == 0u); (*cw)[16u * k + 1u] = select(0.0, 1.0, k == 1u); (*cw)[16u * k + 2u] = select(0.0, 1.0, k == 2u); (*cw)[16u * k + 3u] = select(0.0, 1.0, k == 3u);
    (*cw)[16u * k + 4u] = select(0.0, 1.0, k == 4u); (*cw)[16u * k + 5u] = select(0.0, 1.0, k == 5u); (*cw)[16u * k + 6u] = select(0.0, 1.0, k == 6u); (*cw)[16u * k + 7u] = select(0.0, 1.0, k == 7u);
    (*cw)[16u * k + 8u] = select(0.0, 1.0, k == 8u); (*cw)[16u * k + 9u] = select(0.0, 1.0, k == 9u); (*cw)[16u * k + 10u] = select(0.0, 1.0, k == 10u); (*cw)[16u * k + 11u] = select(0.0, 1.0, k == 11u);
    (*cw)[16u * k + 12u] = select(0.0, 1.0, k == 12u); (*cw)[16u * k + 13u] = select(0.0, 1.0, k == 13u); (*cw)[16u * k + 14u] = select(0.0, 1.0, k == 14u); (*cw)[16u * k + 15u] = select(0.0, 1.0, k == 15u);
}

@compute @workgroup_size(LANES)
fn moppa_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let b = wid.y;
    let q = min(wid.x * LANES + li, p.c4 - 1u);
    let tok0 = b * p.tokens;
    for (var t = 0u; t < p.prefix; t++) {
        y[(tok0 + t) * p.c4 + q] = x[(tok0 + t) * p.c4 + q];
    }
    let grid0 = (tok0 + p.prefix) * p.c4 + q;
    var cw: array<f32, 256>;
    cw_row(&cw, 0u); cw_row(&cw, 1u); cw_row(&cw, 2u); cw_row(&cw, 3u);
    cw_row(&cw, 4u); cw_row(&cw, 5u); cw_row(&cw, 6u); cw_row(&cw, 7u);
    cw_row(&cw, 8u); cw_row(&cw, 9u); cw_row(&cw, 10u); cw_row(&cw, 11u);
    cw_row(&cw, 12u); cw_row(&cw, 13u); cw_row(&cw, 14u); cw_row(&cw, 15u);
    // z = C_h x C_wᵀ, one grid row of x at a time.
    var z: array<vec4<f32>, 256>;
    for (var n = 0u; n < p.gh; n++) {
        var xr: array<vec4<f32>, 16>;
        load_row(&xr, grid0 + n * p.gw * p.c4);
        var yr: array<vec4<f32>, 16>;
        yr[0u] = row_dot(&cw, 0u, &xr); yr[1u] = row_dot(&cw, 1u, &xr); yr[2u] = row_dot(&cw, 2u, &xr); yr[3u] = row_dot(&cw, 3u, &xr);
        yr[4u] = row_dot(&cw, 4u, &xr); yr[5u] = row_dot(&cw, 5u, &xr); yr[6u] = row_dot(&cw, 6u, &xr); yr[7u] = row_dot(&cw, 7u, &xr);
        yr[8u] = row_dot(&cw, 8u, &xr); yr[9u] = row_dot(&cw, 9u, &xr); yr[10u] = row_dot(&cw, 10u, &xr); yr[11u] = row_dot(&cw, 11u, &xr);
        yr[12u] = row_dot(&cw, 12u, &xr); yr[13u] = row_dot(&cw, 13u, &xr); yr[14u] = row_dot(&cw, 14u, &xr); yr[15u] = row_dot(&cw, 15u, &xr);
        var ch: array<f32, 16>;
        ch_col(&ch, n);
        axpy_row(&z, 0u, ch[0u], &yr); axpy_row(&z, 1u, ch[1u], &yr); axpy_row(&z, 2u, ch[2u], &yr); axpy_row(&z, 3u, ch[3u], &yr);
        axpy_row(&z, 4u, ch[4u], &yr); axpy_row(&z, 5u, ch[5u], &yr); axpy_row(&z, 6u, ch[6u], &yr); axpy_row(&z, 7u, ch[7u], &yr);
        axpy_row(&z, 8u, ch[8u], &yr); axpy_row(&z, 9u, ch[9u], &yr); axpy_row(&z, 10u, ch[10u], &yr); axpy_row(&z, 11u, ch[11u], &yr);
        axpy_row(&z, 12u, ch[12u], &yr); axpy_row(&z, 13u, ch[13u], &yr); axpy_row(&z, 14u, ch[14u], &yr); axpy_row(&z, 15u, ch[15u], &yr);
    }
    // y = C_hᵀ (r ⊙ z) C_w, one grid row of y at a time; with mode = 1 (the spectrum),
    // r = 1 and both inverse matrices are the identity.
    let spectrum = p.mode == 1u;
    if (!spectrum) {
        scale_row(&z, 0u, q); scale_row(&z, 1u, q); scale_row(&z, 2u, q); scale_row(&z, 3u, q);
        scale_row(&z, 4u, q); scale_row(&z, 5u, q); scale_row(&z, 6u, q); scale_row(&z, 7u, q);
        scale_row(&z, 8u, q); scale_row(&z, 9u, q); scale_row(&z, 10u, q); scale_row(&z, 11u, q);
        scale_row(&z, 12u, q); scale_row(&z, 13u, q); scale_row(&z, 14u, q); scale_row(&z, 15u, q);
    }
    if (spectrum) {
        identity_row(&cw, 0u); identity_row(&cw, 1u); identity_row(&cw, 2u); identity_row(&cw, 3u);
        identity_row(&cw, 4u); identity_row(&cw, 5u); identity_row(&cw, 6u); identity_row(&cw, 7u);
        identity_row(&cw, 8u); identity_row(&cw, 9u); identity_row(&cw, 10u); identity_row(&cw, 11u);
        identity_row(&cw, 12u); identity_row(&cw, 13u); identity_row(&cw, 14u); identity_row(&cw, 15u);
    }
    for (var n = 0u; n < p.gh; n++) {
        var ch: array<f32, 16>;
        ch_col(&ch, n);
        if (spectrum) {
            ch[0u] = select(0.0, 1.0, n == 0u); ch[1u] = select(0.0, 1.0, n == 1u); ch[2u] = select(0.0, 1.0, n == 2u); ch[3u] = select(0.0, 1.0, n == 3u);
            ch[4u] = select(0.0, 1.0, n == 4u); ch[5u] = select(0.0, 1.0, n == 5u); ch[6u] = select(0.0, 1.0, n == 6u); ch[7u] = select(0.0, 1.0, n == 7u);
            ch[8u] = select(0.0, 1.0, n == 8u); ch[9u] = select(0.0, 1.0, n == 9u); ch[10u] = select(0.0, 1.0, n == 10u); ch[11u] = select(0.0, 1.0, n == 11u);
            ch[12u] = select(0.0, 1.0, n == 12u); ch[13u] = select(0.0, 1.0, n == 13u); ch[14u] = select(0.0, 1.0, n == 14u); ch[15u] = select(0.0, 1.0, n == 15u);
        }
        var wr: array<vec4<f32>, 16>;
        axpy_from(&wr, ch[0u], &z, 0u); axpy_from(&wr, ch[1u], &z, 1u); axpy_from(&wr, ch[2u], &z, 2u); axpy_from(&wr, ch[3u], &z, 3u);
        axpy_from(&wr, ch[4u], &z, 4u); axpy_from(&wr, ch[5u], &z, 5u); axpy_from(&wr, ch[6u], &z, 6u); axpy_from(&wr, ch[7u], &z, 7u);
        axpy_from(&wr, ch[8u], &z, 8u); axpy_from(&wr, ch[9u], &z, 9u); axpy_from(&wr, ch[10u], &z, 10u); axpy_from(&wr, ch[11u], &z, 11u);
        axpy_from(&wr, ch[12u], &z, 12u); axpy_from(&wr, ch[13u], &z, 13u); axpy_from(&wr, ch[14u], &z, 14u); axpy_from(&wr, ch[15u], &z, 15u);
        var yr: array<vec4<f32>, 16>;
        yr[0u] = col_dot(&cw, 0u, &wr); yr[1u] = col_dot(&cw, 1u, &wr); yr[2u] = col_dot(&cw, 2u, &wr); yr[3u] = col_dot(&cw, 3u, &wr);
        yr[4u] = col_dot(&cw, 4u, &wr); yr[5u] = col_dot(&cw, 5u, &wr); yr[6u] = col_dot(&cw, 6u, &wr); yr[7u] = col_dot(&cw, 7u, &wr);
        yr[8u] = col_dot(&cw, 8u, &wr); yr[9u] = col_dot(&cw, 9u, &wr); yr[10u] = col_dot(&cw, 10u, &wr); yr[11u] = col_dot(&cw, 11u, &wr);
        yr[12u] = col_dot(&cw, 12u, &wr); yr[13u] = col_dot(&cw, 13u, &wr); yr[14u] = col_dot(&cw, 14u, &wr); yr[15u] = col_dot(&cw, 15u, &wr);
        store_row(&yr, grid0 + n * p.gw * p.c4);
    }
}
