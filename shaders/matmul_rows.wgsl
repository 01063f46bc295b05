// Batched matrix product for CPU adapters (lavapipe), with the epilogue of matmul.wgsl.
//
//   C[z] = alpha · op(A[z]) · op(B[z]) (+ bias) (+ addend[z])      op(A): m×k, op(B): k×n
//
// Same maths and params as matmul.wgsl (`MatmulParams`, flags TRANS_A, TRANS_B, BIAS,
// ADDEND; not TRANS_OUT) for shapes with m ≥ 32, n > 16, n % 4 = 0, k % 4 = 0 and, with
// TRANS_A, m % 4 = 0, so that every operand is read as vec4s (host: ops::matmul).
//
// Why a second kernel: a CPU driver runs a workgroup's invocations as the lanes of SIMD
// registers, and there a load from a buffer whose address is not built from constants and
// immediates alone costs tens of instructions per component (Mesa's lavapipe: a loop over
// the lanes, each with a bounds check), while a multiply-add costs one. An address that
// depends on the workgroup id or on a loop counter is such a load even when every lane
// reads the same place. So a workgroup here is 8 lanes that share their rows through
// subgroup operations: it computes 32 rows × 128 columns, each lane 32 rows × 16 columns (four column
// quads). Per step of 4 along k, each lane loads 8 vec4s of op(A) (rows s, s + 4, .. for
// s = sg mod 4), and subgroupBroadcast from constant lanes (an element extract and a splat)
// hands every lane all 32 rows; each lane also loads 16 vec4s of op(B) of its own, for
// 32·16·4 = 2048 multiply-adds per 24 loads. Sharing among 4 lanes works on subgroups of 4
// (lavapipe on 128-bit vectors, WARP, SwiftShader) as on 8, 16 or more: needs subgroups of at
// least 4 lanes (host: `Gpu::has_subgroups_of(4)`); the matmul_rows8 entry points share among
// 8 lanes where subgroups have 8 or more, 20 loads per step (about 10% faster on lavapipe). No
// workgroup memory, no barriers. On a GPU the tiled kernel of matmul.wgsl is the right one.
//
// Tails without branches: the last workgroup along the rows starts at m − 32 and the lanes
// past the last column quads work on the last four, so every load is inside the matrices;
// where blocks overlap, two invocations store the same value to the same element. The
// epilogue is loaded into the accumulators before the k loop and alpha is folded into the
// op(A) values as they are loaded (stores after the loop made the shader compiler take
// several times longer). Indices into the register arrays are constants everywhere (the
// lines are written out; a loop would leave them dynamic and the arrays in memory).
//
// Layout: inputs a, b, bias, addend (read-only; unused ones may alias a), output c, all
// viewed as vec4<f32>; params `MatmulParams` (host: ops::matmul::MatmulParams).
// Entry points: matmul_rows_{nn,nt,tn,tt} for (TRANS_A, TRANS_B) = (n|t, n|t);
// matmul_rows8_{nn,nt} the same for subgroups of at least 8 lanes, sharing among 8.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    a_stride: u32,
    b_stride: u32,
    flags: u32,
    alpha: f32,
    k_split: u32, // matmul_narrow: depth of one k-chunk (0: no split); others: 0
}

const BIAS: u32 = 4u;
const ADDEND: u32 = 8u;

const ROWS: u32 = 32u;  // rows of a workgroup
const LANES: u32 = 8u;  // invocations of a workgroup
const QUADS: u32 = 4u;  // column quads of a lane
const SHARE: u32 = 4u;  // lanes that share op(A)'s rows: the smallest subgroup the host allows

var<immediate> p: MatmulParams;

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> addend: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

// Rows 4q..4q+3 of ra (alpha·op(A)[i][k0..k0+4]) from a transposed A (stored k×m): v_kk
// holds the four rows at k0 + kk.
fn quad(ra: ptr<function, array<vec4<f32>, 32>>, q: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    (*ra)[4u * q] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
    (*ra)[4u * q + 1u] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
    (*ra)[4u * q + 2u] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
    (*ra)[4u * q + 3u] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
}

// rb[4kk + j] = op(B)[k0 + kk][4q..4q+4] for the lane's quad j = q − q0. Without TRANS_B
// each is one vec4 of a row of B; with it, B is stored n×k and a vec4 holds four k of one
// column, transposed here in registers.
fn col(rb: ptr<function, array<vec4<f32>, 16>>, j: u32, trans_b: bool, base: u32, q: u32, k0: u32) {
    let n4 = p.n / 4u;
    if (!trans_b) {
        (*rb)[j] = b[base + k0 * n4 + q];
        (*rb)[4u + j] = b[base + (k0 + 1u) * n4 + q];
        (*rb)[8u + j] = b[base + (k0 + 2u) * n4 + q];
        (*rb)[12u + j] = b[base + (k0 + 3u) * n4 + q];
    } else {
        let k4 = p.k / 4u;
        let at = base + 4u * q * k4 + k0 / 4u;
        let v0 = b[at];
        let v1 = b[at + k4];
        let v2 = b[at + 2u * k4];
        let v3 = b[at + 3u * k4];
        (*rb)[j] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
        (*rb)[4u + j] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
        (*rb)[8u + j] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
        (*rb)[12u + j] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
    }
}

// acc[4r + j] += Σ_kk x[kk] · rb[4kk + j] for the lane's four quads j.
fn fma_row(acc: ptr<function, array<vec4<f32>, 128>>, r: u32, x: vec4<f32>, rb: ptr<function, array<vec4<f32>, 16>>) {
    (*acc)[4u * r] = fma(vec4(x.w), (*rb)[12u], fma(vec4(x.z), (*rb)[8u], fma(vec4(x.y), (*rb)[4u], fma(vec4(x.x), (*rb)[0u], (*acc)[4u * r]))));
    (*acc)[4u * r + 1u] = fma(vec4(x.w), (*rb)[13u], fma(vec4(x.z), (*rb)[9u], fma(vec4(x.y), (*rb)[5u], fma(vec4(x.x), (*rb)[1u], (*acc)[4u * r + 1u]))));
    (*acc)[4u * r + 2u] = fma(vec4(x.w), (*rb)[14u], fma(vec4(x.z), (*rb)[10u], fma(vec4(x.y), (*rb)[6u], fma(vec4(x.x), (*rb)[2u], (*acc)[4u * r + 2u]))));
    (*acc)[4u * r + 3u] = fma(vec4(x.w), (*rb)[15u], fma(vec4(x.z), (*rb)[11u], fma(vec4(x.y), (*rb)[7u], fma(vec4(x.x), (*rb)[3u], (*acc)[4u * r + 3u]))));
}

// One step of 4 along k: loads, then the 32 rows' multiply-adds. The lanes share op(A)'s 32
// rows by subgroupBroadcast from constant lanes (see the header).
fn step(acc: ptr<function, array<vec4<f32>, 128>>, trans_a: bool, trans_b: bool, share8: bool, z: u32, row0: u32, q0: u32, k0: u32, sg: u32) {
    var ra: array<vec4<f32>, 32>;
    var rb: array<vec4<f32>, 16>;
    // Lane s = sg % 4 of each group of 4 loads rows s + 4i (without Aᵀ; with it, the row
    // quads s and s + 4); lanes 4..7 load what lanes 0..3 do, so a subgroup of 4 lanes
    // has every row as well as one of 8 or more. With `share8` (subgroups of 8 or more, no
    // Aᵀ) lane sg loads rows sg + 8i: half the loads.
    let s = sg % SHARE;
    if (share8) {
        let k4 = p.k / 4u;
        let at = z * (p.a_stride / 4u) + (row0 + sg) * k4 + k0 / 4u;
        let v0 = p.alpha * a[at];
        let v1 = p.alpha * a[at + 8u * k4];
        let v2 = p.alpha * a[at + 16u * k4];
        let v3 = p.alpha * a[at + 24u * k4];
        ra[0u] = subgroupBroadcast(v0, 0u); ra[1u] = subgroupBroadcast(v0, 1u); ra[2u] = subgroupBroadcast(v0, 2u); ra[3u] = subgroupBroadcast(v0, 3u);
        ra[4u] = subgroupBroadcast(v0, 4u); ra[5u] = subgroupBroadcast(v0, 5u); ra[6u] = subgroupBroadcast(v0, 6u); ra[7u] = subgroupBroadcast(v0, 7u);
        ra[8u] = subgroupBroadcast(v1, 0u); ra[9u] = subgroupBroadcast(v1, 1u); ra[10u] = subgroupBroadcast(v1, 2u); ra[11u] = subgroupBroadcast(v1, 3u);
        ra[12u] = subgroupBroadcast(v1, 4u); ra[13u] = subgroupBroadcast(v1, 5u); ra[14u] = subgroupBroadcast(v1, 6u); ra[15u] = subgroupBroadcast(v1, 7u);
        ra[16u] = subgroupBroadcast(v2, 0u); ra[17u] = subgroupBroadcast(v2, 1u); ra[18u] = subgroupBroadcast(v2, 2u); ra[19u] = subgroupBroadcast(v2, 3u);
        ra[20u] = subgroupBroadcast(v2, 4u); ra[21u] = subgroupBroadcast(v2, 5u); ra[22u] = subgroupBroadcast(v2, 6u); ra[23u] = subgroupBroadcast(v2, 7u);
        ra[24u] = subgroupBroadcast(v3, 0u); ra[25u] = subgroupBroadcast(v3, 1u); ra[26u] = subgroupBroadcast(v3, 2u); ra[27u] = subgroupBroadcast(v3, 3u);
        ra[28u] = subgroupBroadcast(v3, 4u); ra[29u] = subgroupBroadcast(v3, 5u); ra[30u] = subgroupBroadcast(v3, 6u); ra[31u] = subgroupBroadcast(v3, 7u);
    } else if (!trans_a) {
        let k4 = p.k / 4u;
        let at = z * (p.a_stride / 4u) + (row0 + s) * k4 + k0 / 4u;
        let v0 = p.alpha * a[at];
        let v1 = p.alpha * a[at + 4u * k4];
        let v2 = p.alpha * a[at + 8u * k4];
        let v3 = p.alpha * a[at + 12u * k4];
        let v4 = p.alpha * a[at + 16u * k4];
        let v5 = p.alpha * a[at + 20u * k4];
        let v6 = p.alpha * a[at + 24u * k4];
        let v7 = p.alpha * a[at + 28u * k4];
        ra[0u] = subgroupBroadcast(v0, 0u); ra[1u] = subgroupBroadcast(v0, 1u); ra[2u] = subgroupBroadcast(v0, 2u); ra[3u] = subgroupBroadcast(v0, 3u);
        ra[4u] = subgroupBroadcast(v1, 0u); ra[5u] = subgroupBroadcast(v1, 1u); ra[6u] = subgroupBroadcast(v1, 2u); ra[7u] = subgroupBroadcast(v1, 3u);
        ra[8u] = subgroupBroadcast(v2, 0u); ra[9u] = subgroupBroadcast(v2, 1u); ra[10u] = subgroupBroadcast(v2, 2u); ra[11u] = subgroupBroadcast(v2, 3u);
        ra[12u] = subgroupBroadcast(v3, 0u); ra[13u] = subgroupBroadcast(v3, 1u); ra[14u] = subgroupBroadcast(v3, 2u); ra[15u] = subgroupBroadcast(v3, 3u);
        ra[16u] = subgroupBroadcast(v4, 0u); ra[17u] = subgroupBroadcast(v4, 1u); ra[18u] = subgroupBroadcast(v4, 2u); ra[19u] = subgroupBroadcast(v4, 3u);
        ra[20u] = subgroupBroadcast(v5, 0u); ra[21u] = subgroupBroadcast(v5, 1u); ra[22u] = subgroupBroadcast(v5, 2u); ra[23u] = subgroupBroadcast(v5, 3u);
        ra[24u] = subgroupBroadcast(v6, 0u); ra[25u] = subgroupBroadcast(v6, 1u); ra[26u] = subgroupBroadcast(v6, 2u); ra[27u] = subgroupBroadcast(v6, 3u);
        ra[28u] = subgroupBroadcast(v7, 0u); ra[29u] = subgroupBroadcast(v7, 1u); ra[30u] = subgroupBroadcast(v7, 2u); ra[31u] = subgroupBroadcast(v7, 3u);
    } else {
        let m4 = p.m / 4u;
        let at = z * (p.a_stride / 4u) + row0 / 4u + s + k0 * m4;
        let w0 = p.alpha * a[at];
        let w1 = p.alpha * a[at + m4];
        let w2 = p.alpha * a[at + 2u * m4];
        let w3 = p.alpha * a[at + 3u * m4];
        let x0 = p.alpha * a[at + 4u];
        let x1 = p.alpha * a[at + 4u + m4];
        let x2 = p.alpha * a[at + 4u + 2u * m4];
        let x3 = p.alpha * a[at + 4u + 3u * m4];
        quad(&ra, 0u, subgroupBroadcast(w0, 0u), subgroupBroadcast(w1, 0u), subgroupBroadcast(w2, 0u), subgroupBroadcast(w3, 0u));
        quad(&ra, 1u, subgroupBroadcast(w0, 1u), subgroupBroadcast(w1, 1u), subgroupBroadcast(w2, 1u), subgroupBroadcast(w3, 1u));
        quad(&ra, 2u, subgroupBroadcast(w0, 2u), subgroupBroadcast(w1, 2u), subgroupBroadcast(w2, 2u), subgroupBroadcast(w3, 2u));
        quad(&ra, 3u, subgroupBroadcast(w0, 3u), subgroupBroadcast(w1, 3u), subgroupBroadcast(w2, 3u), subgroupBroadcast(w3, 3u));
        quad(&ra, 4u, subgroupBroadcast(x0, 0u), subgroupBroadcast(x1, 0u), subgroupBroadcast(x2, 0u), subgroupBroadcast(x3, 0u));
        quad(&ra, 5u, subgroupBroadcast(x0, 1u), subgroupBroadcast(x1, 1u), subgroupBroadcast(x2, 1u), subgroupBroadcast(x3, 1u));
        quad(&ra, 6u, subgroupBroadcast(x0, 2u), subgroupBroadcast(x1, 2u), subgroupBroadcast(x2, 2u), subgroupBroadcast(x3, 2u));
        quad(&ra, 7u, subgroupBroadcast(x0, 3u), subgroupBroadcast(x1, 3u), subgroupBroadcast(x2, 3u), subgroupBroadcast(x3, 3u));
    }
    let base = z * (p.b_stride / 4u);
    col(&rb, 0u, trans_b, base, q0, k0); col(&rb, 1u, trans_b, base, q0 + 1u, k0);
    col(&rb, 2u, trans_b, base, q0 + 2u, k0); col(&rb, 3u, trans_b, base, q0 + 3u, k0);
    fma_row(acc, 0u, ra[0u], &rb); fma_row(acc, 1u, ra[1u], &rb); fma_row(acc, 2u, ra[2u], &rb); fma_row(acc, 3u, ra[3u], &rb);
    fma_row(acc, 4u, ra[4u], &rb); fma_row(acc, 5u, ra[5u], &rb); fma_row(acc, 6u, ra[6u], &rb); fma_row(acc, 7u, ra[7u], &rb);
    fma_row(acc, 8u, ra[8u], &rb); fma_row(acc, 9u, ra[9u], &rb); fma_row(acc, 10u, ra[10u], &rb); fma_row(acc, 11u, ra[11u], &rb);
    fma_row(acc, 12u, ra[12u], &rb); fma_row(acc, 13u, ra[13u], &rb); fma_row(acc, 14u, ra[14u], &rb); fma_row(acc, 15u, ra[15u], &rb);
    fma_row(acc, 16u, ra[16u], &rb); fma_row(acc, 17u, ra[17u], &rb); fma_row(acc, 18u, ra[18u], &rb); fma_row(acc, 19u, ra[19u], &rb);
    fma_row(acc, 20u, ra[20u], &rb); fma_row(acc, 21u, ra[21u], &rb); fma_row(acc, 22u, ra[22u], &rb); fma_row(acc, 23u, ra[23u], &rb);
    fma_row(acc, 24u, ra[24u], &rb); fma_row(acc, 25u, ra[25u], &rb); fma_row(acc, 26u, ra[26u], &rb); fma_row(acc, 27u, ra[27u], &rb);
    fma_row(acc, 28u, ra[28u], &rb); fma_row(acc, 29u, ra[29u], &rb); fma_row(acc, 30u, ra[30u], &rb); fma_row(acc, 31u, ra[31u], &rb);
}

// The epilogue terms (bias, addend) of C[z][i][4q..4q+4], selected without branching.
fn epilogue(z: u32, i: u32, q: u32) -> vec4<f32> {
    let zero = vec4<f32>();
    let at = (z * p.m + i) * (p.n / 4u) + q;
    return select(zero, bias[q], (p.flags & BIAS) != 0u) + select(zero, addend[at], (p.flags & ADDEND) != 0u);
}

fn init_row(acc: ptr<function, array<vec4<f32>, 128>>, r: u32, z: u32, i: u32, q0: u32) {
    (*acc)[4u * r] = epilogue(z, i, q0);
    (*acc)[4u * r + 1u] = epilogue(z, i, q0 + 1u);
    (*acc)[4u * r + 2u] = epilogue(z, i, q0 + 2u);
    (*acc)[4u * r + 3u] = epilogue(z, i, q0 + 3u);
}

fn store_row(acc: ptr<function, array<vec4<f32>, 128>>, r: u32, z: u32, i: u32, q0: u32) {
    let at = (z * p.m + i) * (p.n / 4u) + q0;
    c[at] = (*acc)[4u * r];
    c[at + 1u] = (*acc)[4u * r + 1u];
    c[at + 2u] = (*acc)[4u * r + 2u];
    c[at + 3u] = (*acc)[4u * r + 3u];
}

fn body(trans_a: bool, trans_b: bool, share8: bool, wid: vec3<u32>, li: u32, sg: u32) {
    let z = wid.z;
    // The tail guards: blocks past the end move back inside (see the header).
    let row0 = min(wid.y * ROWS, p.m - ROWS);
    let q0 = min((wid.x * LANES + li) * QUADS, p.n / 4u - QUADS);
    // acc[4r + j]: row row0 + r, columns 4(q0 + j) .. +4.
    var acc: array<vec4<f32>, 128>;
    init_row(&acc, 0u, z, row0 + 0u, q0); init_row(&acc, 1u, z, row0 + 1u, q0); init_row(&acc, 2u, z, row0 + 2u, q0); init_row(&acc, 3u, z, row0 + 3u, q0);
    init_row(&acc, 4u, z, row0 + 4u, q0); init_row(&acc, 5u, z, row0 + 5u, q0); init_row(&acc, 6u, z, row0 + 6u, q0); init_row(&acc, 7u, z, row0 + 7u, q0);
    init_row(&acc, 8u, z, row0 + 8u, q0); init_row(&acc, 9u, z, row0 + 9u, q0); init_row(&acc, 10u, z, row0 + 10u, q0); init_row(&acc, 11u, z, row0 + 11u, q0);
    init_row(&acc, 12u, z, row0 + 12u, q0); init_row(&acc, 13u, z, row0 + 13u, q0); init_row(&acc, 14u, z, row0 + 14u, q0); init_row(&acc, 15u, z, row0 + 15u, q0);
    init_row(&acc, 16u, z, row0 + 16u, q0); init_row(&acc, 17u, z, row0 + 17u, q0); init_row(&acc, 18u, z, row0 + 18u, q0); init_row(&acc, 19u, z, row0 + 19u, q0);
    init_row(&acc, 20u, z, row0 + 20u, q0); init_row(&acc, 21u, z, row0 + 21u, q0); init_row(&acc, 22u, z, row0 + 22u, q0); init_row(&acc, 23u, z, row0 + 23u, q0);
    init_row(&acc, 24u, z, row0 + 24u, q0); init_row(&acc, 25u, z, row0 + 25u, q0); init_row(&acc, 26u, z, row0 + 26u, q0); init_row(&acc, 27u, z, row0 + 27u, q0);
    init_row(&acc, 28u, z, row0 + 28u, q0); init_row(&acc, 29u, z, row0 + 29u, q0); init_row(&acc, 30u, z, row0 + 30u, q0); init_row(&acc, 31u, z, row0 + 31u, q0);
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        step(&acc, trans_a, trans_b, share8, z, row0, q0, k0, sg);
    }
    store_row(&acc, 0u, z, row0 + 0u, q0); store_row(&acc, 1u, z, row0 + 1u, q0); store_row(&acc, 2u, z, row0 + 2u, q0); store_row(&acc, 3u, z, row0 + 3u, q0);
    store_row(&acc, 4u, z, row0 + 4u, q0); store_row(&acc, 5u, z, row0 + 5u, q0); store_row(&acc, 6u, z, row0 + 6u, q0); store_row(&acc, 7u, z, row0 + 7u, q0);
    store_row(&acc, 8u, z, row0 + 8u, q0); store_row(&acc, 9u, z, row0 + 9u, q0); store_row(&acc, 10u, z, row0 + 10u, q0); store_row(&acc, 11u, z, row0 + 11u, q0);
    store_row(&acc, 12u, z, row0 + 12u, q0); store_row(&acc, 13u, z, row0 + 13u, q0); store_row(&acc, 14u, z, row0 + 14u, q0); store_row(&acc, 15u, z, row0 + 15u, q0);
    store_row(&acc, 16u, z, row0 + 16u, q0); store_row(&acc, 17u, z, row0 + 17u, q0); store_row(&acc, 18u, z, row0 + 18u, q0); store_row(&acc, 19u, z, row0 + 19u, q0);
    store_row(&acc, 20u, z, row0 + 20u, q0); store_row(&acc, 21u, z, row0 + 21u, q0); store_row(&acc, 22u, z, row0 + 22u, q0); store_row(&acc, 23u, z, row0 + 23u, q0);
    store_row(&acc, 24u, z, row0 + 24u, q0); store_row(&acc, 25u, z, row0 + 25u, q0); store_row(&acc, 26u, z, row0 + 26u, q0); store_row(&acc, 27u, z, row0 + 27u, q0);
    store_row(&acc, 28u, z, row0 + 28u, q0); store_row(&acc, 29u, z, row0 + 29u, q0); store_row(&acc, 30u, z, row0 + 30u, q0); store_row(&acc, 31u, z, row0 + 31u, q0);
}

@compute @workgroup_size(LANES)
fn matmul_rows_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(false, false, false, wid, li, sg);
}

@compute @workgroup_size(LANES)
fn matmul_rows_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(false, true, false, wid, li, sg);
}

@compute @workgroup_size(LANES)
fn matmul_rows_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(true, false, false, wid, li, sg);
}

@compute @workgroup_size(LANES)
fn matmul_rows_tt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(true, true, false, wid, li, sg);
}

// The same without Aᵀ for subgroups of at least 8 lanes (`share8`).
@compute @workgroup_size(LANES)
fn matmul_rows8_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(false, false, true, wid, li, sg);
}

@compute @workgroup_size(LANES)
fn matmul_rows8_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    body(false, true, true, wid, li, sg);
}
