// The MoPPA spectral filter for CPU adapters on 14 × 14 grids (ViT-B/16 at 224²): the
// kernel of spectral_rows.wgsl (same params, bindings and layout; see its header) written for
// one grid size, so nothing is padded and the DCT's symmetry halves the multiply-adds:
//
//   C[k][13 − n] = (−1)^k C[k][n]    (C the orthonormal DCT-II matrix of size 14)
//
// so a transform along w uses u = x[m] + x[13 − m] for even k and d = x[m] − x[13 − m] for
// odd k, over m < 7; rows enter the transform along h in pairs (n, 13 − n) as their sum
// (even k) and difference (odd k); and the inverses produce output pairs as E ± O from the
// even and odd halves of the sum. Only C[k][m] for m < 7 is held (98 values).
//
// moppa_rows14: inputs x, r, tables; output y; params `SpectralRowsParams`
// (host: ops::spectral::SpectralRowsParams). Grid [⌈C/32⌉, B, 1]; needs gh = gw = 14.

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

// C[k][n] = s_k · cos(π (2n + 1) k / 28) (the h table; h and w are the same size here).
fn coef(k: u32, n: u32) -> f32 {
    return select(p.sh, p.s0h, k == 0u) * tables[((2u * n + 1u) * k) % 56u];
}

// c[7k + m] = C[k][m], m < 7.
fn c_row(c: ptr<function, array<f32, 98>>, k: u32) {
    (*c)[7u * k + 0u] = coef(k, 0u); (*c)[7u * k + 1u] = coef(k, 1u); (*c)[7u * k + 2u] = coef(k, 2u); (*c)[7u * k + 3u] = coef(k, 3u);
    (*c)[7u * k + 4u] = coef(k, 4u); (*c)[7u * k + 5u] = coef(k, 5u); (*c)[7u * k + 6u] = coef(k, 6u);
}

fn load_row(v: ptr<function, array<vec4<f32>, 14>>, at: u32) {
    (*v)[0u] = x[at + 0u * p.c4]; (*v)[1u] = x[at + 1u * p.c4]; (*v)[2u] = x[at + 2u * p.c4]; (*v)[3u] = x[at + 3u * p.c4];
    (*v)[4u] = x[at + 4u * p.c4]; (*v)[5u] = x[at + 5u * p.c4]; (*v)[6u] = x[at + 6u * p.c4]; (*v)[7u] = x[at + 7u * p.c4];
    (*v)[8u] = x[at + 8u * p.c4]; (*v)[9u] = x[at + 9u * p.c4]; (*v)[10u] = x[at + 10u * p.c4]; (*v)[11u] = x[at + 11u * p.c4];
    (*v)[12u] = x[at + 12u * p.c4]; (*v)[13u] = x[at + 13u * p.c4];
}

fn store_row(v: ptr<function, array<vec4<f32>, 14>>, at: u32) {
    y[at + 0u * p.c4] = (*v)[0u]; y[at + 1u * p.c4] = (*v)[1u]; y[at + 2u * p.c4] = (*v)[2u]; y[at + 3u * p.c4] = (*v)[3u];
    y[at + 4u * p.c4] = (*v)[4u]; y[at + 5u * p.c4] = (*v)[5u]; y[at + 6u * p.c4] = (*v)[6u]; y[at + 7u * p.c4] = (*v)[7u];
    y[at + 8u * p.c4] = (*v)[8u]; y[at + 9u * p.c4] = (*v)[9u]; y[at + 10u * p.c4] = (*v)[10u]; y[at + 11u * p.c4] = (*v)[11u];
    y[at + 12u * p.c4] = (*v)[12u]; y[at + 13u * p.c4] = (*v)[13u];
}

// y = C x along w, by the symmetry of C.
fn forward_w(c: ptr<function, array<f32, 98>>, x: ptr<function, array<vec4<f32>, 14>>, y: ptr<function, array<vec4<f32>, 14>>) {
    let u0 = (*x)[0u] + (*x)[13u]; let d0 = (*x)[0u] - (*x)[13u];
    let u1 = (*x)[1u] + (*x)[12u]; let d1 = (*x)[1u] - (*x)[12u];
    let u2 = (*x)[2u] + (*x)[11u]; let d2 = (*x)[2u] - (*x)[11u];
    let u3 = (*x)[3u] + (*x)[10u]; let d3 = (*x)[3u] - (*x)[10u];
    let u4 = (*x)[4u] + (*x)[9u]; let d4 = (*x)[4u] - (*x)[9u];
    let u5 = (*x)[5u] + (*x)[8u]; let d5 = (*x)[5u] - (*x)[8u];
    let u6 = (*x)[6u] + (*x)[7u]; let d6 = (*x)[6u] - (*x)[7u];
    (*y)[0u] = fma(vec4((*c)[6u]), u6, fma(vec4((*c)[5u]), u5, fma(vec4((*c)[4u]), u4, fma(vec4((*c)[3u]), u3, fma(vec4((*c)[2u]), u2, fma(vec4((*c)[1u]), u1, (*c)[0u] * u0))))));
    (*y)[1u] = fma(vec4((*c)[13u]), d6, fma(vec4((*c)[12u]), d5, fma(vec4((*c)[11u]), d4, fma(vec4((*c)[10u]), d3, fma(vec4((*c)[9u]), d2, fma(vec4((*c)[8u]), d1, (*c)[7u] * d0))))));
    (*y)[2u] = fma(vec4((*c)[20u]), u6, fma(vec4((*c)[19u]), u5, fma(vec4((*c)[18u]), u4, fma(vec4((*c)[17u]), u3, fma(vec4((*c)[16u]), u2, fma(vec4((*c)[15u]), u1, (*c)[14u] * u0))))));
    (*y)[3u] = fma(vec4((*c)[27u]), d6, fma(vec4((*c)[26u]), d5, fma(vec4((*c)[25u]), d4, fma(vec4((*c)[24u]), d3, fma(vec4((*c)[23u]), d2, fma(vec4((*c)[22u]), d1, (*c)[21u] * d0))))));
    (*y)[4u] = fma(vec4((*c)[34u]), u6, fma(vec4((*c)[33u]), u5, fma(vec4((*c)[32u]), u4, fma(vec4((*c)[31u]), u3, fma(vec4((*c)[30u]), u2, fma(vec4((*c)[29u]), u1, (*c)[28u] * u0))))));
    (*y)[5u] = fma(vec4((*c)[41u]), d6, fma(vec4((*c)[40u]), d5, fma(vec4((*c)[39u]), d4, fma(vec4((*c)[38u]), d3, fma(vec4((*c)[37u]), d2, fma(vec4((*c)[36u]), d1, (*c)[35u] * d0))))));
    (*y)[6u] = fma(vec4((*c)[48u]), u6, fma(vec4((*c)[47u]), u5, fma(vec4((*c)[46u]), u4, fma(vec4((*c)[45u]), u3, fma(vec4((*c)[44u]), u2, fma(vec4((*c)[43u]), u1, (*c)[42u] * u0))))));
    (*y)[7u] = fma(vec4((*c)[55u]), d6, fma(vec4((*c)[54u]), d5, fma(vec4((*c)[53u]), d4, fma(vec4((*c)[52u]), d3, fma(vec4((*c)[51u]), d2, fma(vec4((*c)[50u]), d1, (*c)[49u] * d0))))));
    (*y)[8u] = fma(vec4((*c)[62u]), u6, fma(vec4((*c)[61u]), u5, fma(vec4((*c)[60u]), u4, fma(vec4((*c)[59u]), u3, fma(vec4((*c)[58u]), u2, fma(vec4((*c)[57u]), u1, (*c)[56u] * u0))))));
    (*y)[9u] = fma(vec4((*c)[69u]), d6, fma(vec4((*c)[68u]), d5, fma(vec4((*c)[67u]), d4, fma(vec4((*c)[66u]), d3, fma(vec4((*c)[65u]), d2, fma(vec4((*c)[64u]), d1, (*c)[63u] * d0))))));
    (*y)[10u] = fma(vec4((*c)[76u]), u6, fma(vec4((*c)[75u]), u5, fma(vec4((*c)[74u]), u4, fma(vec4((*c)[73u]), u3, fma(vec4((*c)[72u]), u2, fma(vec4((*c)[71u]), u1, (*c)[70u] * u0))))));
    (*y)[11u] = fma(vec4((*c)[83u]), d6, fma(vec4((*c)[82u]), d5, fma(vec4((*c)[81u]), d4, fma(vec4((*c)[80u]), d3, fma(vec4((*c)[79u]), d2, fma(vec4((*c)[78u]), d1, (*c)[77u] * d0))))));
    (*y)[12u] = fma(vec4((*c)[90u]), u6, fma(vec4((*c)[89u]), u5, fma(vec4((*c)[88u]), u4, fma(vec4((*c)[87u]), u3, fma(vec4((*c)[86u]), u2, fma(vec4((*c)[85u]), u1, (*c)[84u] * u0))))));
    (*y)[13u] = fma(vec4((*c)[97u]), d6, fma(vec4((*c)[96u]), d5, fma(vec4((*c)[95u]), d4, fma(vec4((*c)[94u]), d3, fma(vec4((*c)[93u]), d2, fma(vec4((*c)[92u]), d1, (*c)[91u] * d0))))));
}

// out = Cᵀ w along w: out[m], out[13 − m] = E ± O over the even and odd rows of C.
fn inverse_w(c: ptr<function, array<f32, 98>>, w: ptr<function, array<vec4<f32>, 14>>, out: ptr<function, array<vec4<f32>, 14>>) {
    let e0 = fma(vec4((*c)[84u]), (*w)[12u], fma(vec4((*c)[70u]), (*w)[10u], fma(vec4((*c)[56u]), (*w)[8u], fma(vec4((*c)[42u]), (*w)[6u], fma(vec4((*c)[28u]), (*w)[4u], fma(vec4((*c)[14u]), (*w)[2u], (*c)[0u] * (*w)[0u]))))));
    let o0 = fma(vec4((*c)[91u]), (*w)[13u], fma(vec4((*c)[77u]), (*w)[11u], fma(vec4((*c)[63u]), (*w)[9u], fma(vec4((*c)[49u]), (*w)[7u], fma(vec4((*c)[35u]), (*w)[5u], fma(vec4((*c)[21u]), (*w)[3u], (*c)[7u] * (*w)[1u]))))));
    (*out)[0u] = e0 + o0; (*out)[13u] = e0 - o0;
    let e1 = fma(vec4((*c)[85u]), (*w)[12u], fma(vec4((*c)[71u]), (*w)[10u], fma(vec4((*c)[57u]), (*w)[8u], fma(vec4((*c)[43u]), (*w)[6u], fma(vec4((*c)[29u]), (*w)[4u], fma(vec4((*c)[15u]), (*w)[2u], (*c)[1u] * (*w)[0u]))))));
    let o1 = fma(vec4((*c)[92u]), (*w)[13u], fma(vec4((*c)[78u]), (*w)[11u], fma(vec4((*c)[64u]), (*w)[9u], fma(vec4((*c)[50u]), (*w)[7u], fma(vec4((*c)[36u]), (*w)[5u], fma(vec4((*c)[22u]), (*w)[3u], (*c)[8u] * (*w)[1u]))))));
    (*out)[1u] = e1 + o1; (*out)[12u] = e1 - o1;
    let e2 = fma(vec4((*c)[86u]), (*w)[12u], fma(vec4((*c)[72u]), (*w)[10u], fma(vec4((*c)[58u]), (*w)[8u], fma(vec4((*c)[44u]), (*w)[6u], fma(vec4((*c)[30u]), (*w)[4u], fma(vec4((*c)[16u]), (*w)[2u], (*c)[2u] * (*w)[0u]))))));
    let o2 = fma(vec4((*c)[93u]), (*w)[13u], fma(vec4((*c)[79u]), (*w)[11u], fma(vec4((*c)[65u]), (*w)[9u], fma(vec4((*c)[51u]), (*w)[7u], fma(vec4((*c)[37u]), (*w)[5u], fma(vec4((*c)[23u]), (*w)[3u], (*c)[9u] * (*w)[1u]))))));
    (*out)[2u] = e2 + o2; (*out)[11u] = e2 - o2;
    let e3 = fma(vec4((*c)[87u]), (*w)[12u], fma(vec4((*c)[73u]), (*w)[10u], fma(vec4((*c)[59u]), (*w)[8u], fma(vec4((*c)[45u]), (*w)[6u], fma(vec4((*c)[31u]), (*w)[4u], fma(vec4((*c)[17u]), (*w)[2u], (*c)[3u] * (*w)[0u]))))));
    let o3 = fma(vec4((*c)[94u]), (*w)[13u], fma(vec4((*c)[80u]), (*w)[11u], fma(vec4((*c)[66u]), (*w)[9u], fma(vec4((*c)[52u]), (*w)[7u], fma(vec4((*c)[38u]), (*w)[5u], fma(vec4((*c)[24u]), (*w)[3u], (*c)[10u] * (*w)[1u]))))));
    (*out)[3u] = e3 + o3; (*out)[10u] = e3 - o3;
    let e4 = fma(vec4((*c)[88u]), (*w)[12u], fma(vec4((*c)[74u]), (*w)[10u], fma(vec4((*c)[60u]), (*w)[8u], fma(vec4((*c)[46u]), (*w)[6u], fma(vec4((*c)[32u]), (*w)[4u], fma(vec4((*c)[18u]), (*w)[2u], (*c)[4u] * (*w)[0u]))))));
    let o4 = fma(vec4((*c)[95u]), (*w)[13u], fma(vec4((*c)[81u]), (*w)[11u], fma(vec4((*c)[67u]), (*w)[9u], fma(vec4((*c)[53u]), (*w)[7u], fma(vec4((*c)[39u]), (*w)[5u], fma(vec4((*c)[25u]), (*w)[3u], (*c)[11u] * (*w)[1u]))))));
    (*out)[4u] = e4 + o4; (*out)[9u] = e4 - o4;
    let e5 = fma(vec4((*c)[89u]), (*w)[12u], fma(vec4((*c)[75u]), (*w)[10u], fma(vec4((*c)[61u]), (*w)[8u], fma(vec4((*c)[47u]), (*w)[6u], fma(vec4((*c)[33u]), (*w)[4u], fma(vec4((*c)[19u]), (*w)[2u], (*c)[5u] * (*w)[0u]))))));
    let o5 = fma(vec4((*c)[96u]), (*w)[13u], fma(vec4((*c)[82u]), (*w)[11u], fma(vec4((*c)[68u]), (*w)[9u], fma(vec4((*c)[54u]), (*w)[7u], fma(vec4((*c)[40u]), (*w)[5u], fma(vec4((*c)[26u]), (*w)[3u], (*c)[12u] * (*w)[1u]))))));
    (*out)[5u] = e5 + o5; (*out)[8u] = e5 - o5;
    let e6 = fma(vec4((*c)[90u]), (*w)[12u], fma(vec4((*c)[76u]), (*w)[10u], fma(vec4((*c)[62u]), (*w)[8u], fma(vec4((*c)[48u]), (*w)[6u], fma(vec4((*c)[34u]), (*w)[4u], fma(vec4((*c)[20u]), (*w)[2u], (*c)[6u] * (*w)[0u]))))));
    let o6 = fma(vec4((*c)[97u]), (*w)[13u], fma(vec4((*c)[83u]), (*w)[11u], fma(vec4((*c)[69u]), (*w)[9u], fma(vec4((*c)[55u]), (*w)[7u], fma(vec4((*c)[41u]), (*w)[5u], fma(vec4((*c)[27u]), (*w)[3u], (*c)[13u] * (*w)[1u]))))));
    (*out)[6u] = e6 + o6; (*out)[7u] = e6 - o6;
}

// z[14k + l] += w · v[l].
fn acc_row(z: ptr<function, array<vec4<f32>, 196>>, k: u32, w: f32, v: ptr<function, array<vec4<f32>, 14>>) {
    let ww = vec4(w);
    (*z)[14u * k + 0u] = fma(ww, (*v)[0u], (*z)[14u * k + 0u]); (*z)[14u * k + 1u] = fma(ww, (*v)[1u], (*z)[14u * k + 1u]);
    (*z)[14u * k + 2u] = fma(ww, (*v)[2u], (*z)[14u * k + 2u]); (*z)[14u * k + 3u] = fma(ww, (*v)[3u], (*z)[14u * k + 3u]);
    (*z)[14u * k + 4u] = fma(ww, (*v)[4u], (*z)[14u * k + 4u]); (*z)[14u * k + 5u] = fma(ww, (*v)[5u], (*z)[14u * k + 5u]);
    (*z)[14u * k + 6u] = fma(ww, (*v)[6u], (*z)[14u * k + 6u]); (*z)[14u * k + 7u] = fma(ww, (*v)[7u], (*z)[14u * k + 7u]);
    (*z)[14u * k + 8u] = fma(ww, (*v)[8u], (*z)[14u * k + 8u]); (*z)[14u * k + 9u] = fma(ww, (*v)[9u], (*z)[14u * k + 9u]);
    (*z)[14u * k + 10u] = fma(ww, (*v)[10u], (*z)[14u * k + 10u]); (*z)[14u * k + 11u] = fma(ww, (*v)[11u], (*z)[14u * k + 11u]);
    (*z)[14u * k + 12u] = fma(ww, (*v)[12u], (*z)[14u * k + 12u]); (*z)[14u * k + 13u] = fma(ww, (*v)[13u], (*z)[14u * k + 13u]);
}

// v[l] += w · z[14k + l].
fn axpy_from(v: ptr<function, array<vec4<f32>, 14>>, w: f32, z: ptr<function, array<vec4<f32>, 196>>, k: u32) {
    let ww = vec4(w);
    (*v)[0u] = fma(ww, (*z)[14u * k + 0u], (*v)[0u]); (*v)[1u] = fma(ww, (*z)[14u * k + 1u], (*v)[1u]);
    (*v)[2u] = fma(ww, (*z)[14u * k + 2u], (*v)[2u]); (*v)[3u] = fma(ww, (*z)[14u * k + 3u], (*v)[3u]);
    (*v)[4u] = fma(ww, (*z)[14u * k + 4u], (*v)[4u]); (*v)[5u] = fma(ww, (*z)[14u * k + 5u], (*v)[5u]);
    (*v)[6u] = fma(ww, (*z)[14u * k + 6u], (*v)[6u]); (*v)[7u] = fma(ww, (*z)[14u * k + 7u], (*v)[7u]);
    (*v)[8u] = fma(ww, (*z)[14u * k + 8u], (*v)[8u]); (*v)[9u] = fma(ww, (*z)[14u * k + 9u], (*v)[9u]);
    (*v)[10u] = fma(ww, (*z)[14u * k + 10u], (*v)[10u]); (*v)[11u] = fma(ww, (*z)[14u * k + 11u], (*v)[11u]);
    (*v)[12u] = fma(ww, (*z)[14u * k + 12u], (*v)[12u]); (*v)[13u] = fma(ww, (*z)[14u * k + 13u], (*v)[13u]);
}

// z[14k + l] *= r[cell (k, l)] for the lane's channel quad q.
fn scale_row(z: ptr<function, array<vec4<f32>, 196>>, k: u32, q: u32) {
    (*z)[14u * k + 0u] *= r[(k * 14u + 0u) * p.c4 + q]; (*z)[14u * k + 1u] *= r[(k * 14u + 1u) * p.c4 + q];
    (*z)[14u * k + 2u] *= r[(k * 14u + 2u) * p.c4 + q]; (*z)[14u * k + 3u] *= r[(k * 14u + 3u) * p.c4 + q];
    (*z)[14u * k + 4u] *= r[(k * 14u + 4u) * p.c4 + q]; (*z)[14u * k + 5u] *= r[(k * 14u + 5u) * p.c4 + q];
    (*z)[14u * k + 6u] *= r[(k * 14u + 6u) * p.c4 + q]; (*z)[14u * k + 7u] *= r[(k * 14u + 7u) * p.c4 + q];
    (*z)[14u * k + 8u] *= r[(k * 14u + 8u) * p.c4 + q]; (*z)[14u * k + 9u] *= r[(k * 14u + 9u) * p.c4 + q];
    (*z)[14u * k + 10u] *= r[(k * 14u + 10u) * p.c4 + q]; (*z)[14u * k + 11u] *= r[(k * 14u + 11u) * p.c4 + q];
    (*z)[14u * k + 12u] *= r[(k * 14u + 12u) * p.c4 + q]; (*z)[14u * k + 13u] *= r[(k * 14u + 13u) * p.c4 + q];
}

// Spectrum row k to y at `at` (p.mode = 1).
fn store_spectrum_row(z: ptr<function, array<vec4<f32>, 196>>, k: u32, at: u32) {
    y[at + 0u * p.c4] = (*z)[14u * k + 0u]; y[at + 1u * p.c4] = (*z)[14u * k + 1u];
    y[at + 2u * p.c4] = (*z)[14u * k + 2u]; y[at + 3u * p.c4] = (*z)[14u * k + 3u];
    y[at + 4u * p.c4] = (*z)[14u * k + 4u]; y[at + 5u * p.c4] = (*z)[14u * k + 5u];
    y[at + 6u * p.c4] = (*z)[14u * k + 6u]; y[at + 7u * p.c4] = (*z)[14u * k + 7u];
    y[at + 8u * p.c4] = (*z)[14u * k + 8u]; y[at + 9u * p.c4] = (*z)[14u * k + 9u];
    y[at + 10u * p.c4] = (*z)[14u * k + 10u]; y[at + 11u * p.c4] = (*z)[14u * k + 11u];
    y[at + 12u * p.c4] = (*z)[14u * k + 12u]; y[at + 13u * p.c4] = (*z)[14u * k + 13u];
}

// ch[k] = C[k][n] for every k (uniform loads).
fn ch_col(ch: ptr<function, array<f32, 14>>, n: u32) {
    (*ch)[0u] = coef(0u, n); (*ch)[1u] = coef(1u, n); (*ch)[2u] = coef(2u, n); (*ch)[3u] = coef(3u, n);
    (*ch)[4u] = coef(4u, n); (*ch)[5u] = coef(5u, n); (*ch)[6u] = coef(6u, n); (*ch)[7u] = coef(7u, n);
    (*ch)[8u] = coef(8u, n); (*ch)[9u] = coef(9u, n); (*ch)[10u] = coef(10u, n); (*ch)[11u] = coef(11u, n);
    (*ch)[12u] = coef(12u, n); (*ch)[13u] = coef(13u, n);
}

@compute @workgroup_size(LANES)
fn moppa_rows14(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let b = wid.y;
    let q = min(wid.x * LANES + li, p.c4 - 1u);
    let tok0 = b * p.tokens;
    for (var t = 0u; t < p.prefix; t++) {
        y[(tok0 + t) * p.c4 + q] = x[(tok0 + t) * p.c4 + q];
    }
    let grid0 = (tok0 + p.prefix) * p.c4 + q;
    let row = 14u * p.c4;
    var c: array<f32, 98>;
    c_row(&c, 0u); c_row(&c, 1u); c_row(&c, 2u); c_row(&c, 3u); c_row(&c, 4u); c_row(&c, 5u); c_row(&c, 6u);
    c_row(&c, 7u); c_row(&c, 8u); c_row(&c, 9u); c_row(&c, 10u); c_row(&c, 11u); c_row(&c, 12u); c_row(&c, 13u);
    // z = C x Cᵀ: rows n and 13 − n enter together, as their sum and difference.
    var z: array<vec4<f32>, 196>;
    for (var n = 0u; n < 7u; n++) {
        var xr: array<vec4<f32>, 14>;
        var y0: array<vec4<f32>, 14>;
        var y1: array<vec4<f32>, 14>;
        load_row(&xr, grid0 + n * row);
        forward_w(&c, &xr, &y0);
        load_row(&xr, grid0 + (13u - n) * row);
        forward_w(&c, &xr, &y1);
        var a: array<vec4<f32>, 14>;
        var b: array<vec4<f32>, 14>;
        a[0u] = y0[0u] + y1[0u]; b[0u] = y0[0u] - y1[0u]; a[1u] = y0[1u] + y1[1u]; b[1u] = y0[1u] - y1[1u];
        a[2u] = y0[2u] + y1[2u]; b[2u] = y0[2u] - y1[2u]; a[3u] = y0[3u] + y1[3u]; b[3u] = y0[3u] - y1[3u];
        a[4u] = y0[4u] + y1[4u]; b[4u] = y0[4u] - y1[4u]; a[5u] = y0[5u] + y1[5u]; b[5u] = y0[5u] - y1[5u];
        a[6u] = y0[6u] + y1[6u]; b[6u] = y0[6u] - y1[6u]; a[7u] = y0[7u] + y1[7u]; b[7u] = y0[7u] - y1[7u];
        a[8u] = y0[8u] + y1[8u]; b[8u] = y0[8u] - y1[8u]; a[9u] = y0[9u] + y1[9u]; b[9u] = y0[9u] - y1[9u];
        a[10u] = y0[10u] + y1[10u]; b[10u] = y0[10u] - y1[10u]; a[11u] = y0[11u] + y1[11u]; b[11u] = y0[11u] - y1[11u];
        a[12u] = y0[12u] + y1[12u]; b[12u] = y0[12u] - y1[12u]; a[13u] = y0[13u] + y1[13u]; b[13u] = y0[13u] - y1[13u];
        var ch: array<f32, 14>;
        ch_col(&ch, n);
        acc_row(&z, 0u, ch[0u], &a); acc_row(&z, 1u, ch[1u], &b);
        acc_row(&z, 2u, ch[2u], &a); acc_row(&z, 3u, ch[3u], &b);
        acc_row(&z, 4u, ch[4u], &a); acc_row(&z, 5u, ch[5u], &b);
        acc_row(&z, 6u, ch[6u], &a); acc_row(&z, 7u, ch[7u], &b);
        acc_row(&z, 8u, ch[8u], &a); acc_row(&z, 9u, ch[9u], &b);
        acc_row(&z, 10u, ch[10u], &a); acc_row(&z, 11u, ch[11u], &b);
        acc_row(&z, 12u, ch[12u], &a); acc_row(&z, 13u, ch[13u], &b);
    }
    if (p.mode == 1u) {
        store_spectrum_row(&z, 0u, grid0 + 0u * 14u * p.c4); store_spectrum_row(&z, 1u, grid0 + 1u * 14u * p.c4);
        store_spectrum_row(&z, 2u, grid0 + 2u * 14u * p.c4); store_spectrum_row(&z, 3u, grid0 + 3u * 14u * p.c4);
        store_spectrum_row(&z, 4u, grid0 + 4u * 14u * p.c4); store_spectrum_row(&z, 5u, grid0 + 5u * 14u * p.c4);
        store_spectrum_row(&z, 6u, grid0 + 6u * 14u * p.c4); store_spectrum_row(&z, 7u, grid0 + 7u * 14u * p.c4);
        store_spectrum_row(&z, 8u, grid0 + 8u * 14u * p.c4); store_spectrum_row(&z, 9u, grid0 + 9u * 14u * p.c4);
        store_spectrum_row(&z, 10u, grid0 + 10u * 14u * p.c4); store_spectrum_row(&z, 11u, grid0 + 11u * 14u * p.c4);
        store_spectrum_row(&z, 12u, grid0 + 12u * 14u * p.c4); store_spectrum_row(&z, 13u, grid0 + 13u * 14u * p.c4);
    } else {
        scale_row(&z, 0u, q); scale_row(&z, 1u, q); scale_row(&z, 2u, q); scale_row(&z, 3u, q); scale_row(&z, 4u, q); scale_row(&z, 5u, q); scale_row(&z, 6u, q);
        scale_row(&z, 7u, q); scale_row(&z, 8u, q); scale_row(&z, 9u, q); scale_row(&z, 10u, q); scale_row(&z, 11u, q); scale_row(&z, 12u, q); scale_row(&z, 13u, q);
        // y = Cᵀ (r ⊙ z) C: output rows n and 13 − n from the even and odd rows of z.
        for (var n = 0u; n < 7u; n++) {
            var ch: array<f32, 14>;
            ch_col(&ch, n);
            var e: array<vec4<f32>, 14>;
            var o: array<vec4<f32>, 14>;
            axpy_from(&e, ch[0u], &z, 0u); axpy_from(&e, ch[2u], &z, 2u);
            axpy_from(&e, ch[4u], &z, 4u); axpy_from(&e, ch[6u], &z, 6u);
            axpy_from(&e, ch[8u], &z, 8u); axpy_from(&e, ch[10u], &z, 10u);
            axpy_from(&e, ch[12u], &z, 12u);
            axpy_from(&o, ch[1u], &z, 1u); axpy_from(&o, ch[3u], &z, 3u);
            axpy_from(&o, ch[5u], &z, 5u); axpy_from(&o, ch[7u], &z, 7u);
            axpy_from(&o, ch[9u], &z, 9u); axpy_from(&o, ch[11u], &z, 11u);
            axpy_from(&o, ch[13u], &z, 13u);
            var w0: array<vec4<f32>, 14>;
            var w1: array<vec4<f32>, 14>;
            w0[0u] = e[0u] + o[0u]; w1[0u] = e[0u] - o[0u]; w0[1u] = e[1u] + o[1u]; w1[1u] = e[1u] - o[1u];
            w0[2u] = e[2u] + o[2u]; w1[2u] = e[2u] - o[2u]; w0[3u] = e[3u] + o[3u]; w1[3u] = e[3u] - o[3u];
            w0[4u] = e[4u] + o[4u]; w1[4u] = e[4u] - o[4u]; w0[5u] = e[5u] + o[5u]; w1[5u] = e[5u] - o[5u];
            w0[6u] = e[6u] + o[6u]; w1[6u] = e[6u] - o[6u]; w0[7u] = e[7u] + o[7u]; w1[7u] = e[7u] - o[7u];
            w0[8u] = e[8u] + o[8u]; w1[8u] = e[8u] - o[8u]; w0[9u] = e[9u] + o[9u]; w1[9u] = e[9u] - o[9u];
            w0[10u] = e[10u] + o[10u]; w1[10u] = e[10u] - o[10u]; w0[11u] = e[11u] + o[11u]; w1[11u] = e[11u] - o[11u];
            w0[12u] = e[12u] + o[12u]; w1[12u] = e[12u] - o[12u]; w0[13u] = e[13u] + o[13u]; w1[13u] = e[13u] - o[13u];
            var out: array<vec4<f32>, 14>;
            inverse_w(&c, &w0, &out);
            store_row(&out, grid0 + n * row);
            inverse_w(&c, &w1, &out);
            store_row(&out, grid0 + (13u - n) * row);
        }
    }
}
