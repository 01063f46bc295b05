// Batched matrix product with transposed operands and a fused epilogue.
//
//   P[z] = op(A[z]) · op(B[z])            op(A): m×k, op(B): k×n, z < batch (grid z)
//   C[z] = alpha · P[z] (+ bias) (+ addend[z])
//
// op(A) = A (stored m×k) or Aᵀ (A stored k×m, flag TRANS_A); likewise B (k×n or n×k).
// A[z] starts at z·a_stride and B[z] at z·b_stride, so a stride of 0 shares one operand
// between all batches. The output is P itself (C[z] at z·m·n, row-major m×n) or, with
// TRANS_OUT, Pᵀ (row-major n×m), which lets the host compute a product with few rows as
// the transpose of one with few columns. The bias is indexed by the output's column
// (j, or i under TRANS_OUT) and shared by all batches; the addend has C's layout.
//
// Layout: inputs a, b, bias, addend (read-only; unused ones may alias a), output c; params
// `MatmulParams` (host: ops::matmul::MatmulParams).
//
// Both kernels tile C and accumulate a block per thread in registers; what the threads of a
// workgroup share is staged in workgroup memory, BK deep and k-major, each thread writing
// whole vec4s (on lavapipe that halved the time of 1024³). Tile loads zero-fill outside
// the matrices and stores skip elements outside C; those checks are the tail guards (an
// early return would break the barriers).
//   matmul:        128 threads, 16×8 per thread, 128×128 tiles of op(A) and op(B), BK = 16.
//   matmul64:      64 threads, 8×8 per thread, 64×64 tiles, BK = 16: four times the
//                  workgroups, for products whose 128×128 tiles would leave a GPU's cores idle.
//   matmul_narrow: 32 threads, 8×8 per thread, 256×8 tiles, BK = 32, for n ≤ 16 (the
//                  rank-r side of a LoRA product, or its transpose), where 128-wide tiles
//                  would idle; only op(B) is staged, as each op(A) element has one reader.
//                  Optionally split over k into partial products (k_split, below).

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

const TRANS_A: u32 = 1u;
const TRANS_B: u32 = 2u;
const BIAS: u32 = 4u;
const ADDEND: u32 = 8u;
const TRANS_OUT: u32 = 16u;

var<immediate> p: MatmulParams;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> addend: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

// op(A)[z][i][kk], zero outside the matrix.
fn load_a(z: u32, i: u32, kk: u32) -> f32 {
    if (i >= p.m || kk >= p.k) { return 0.0; }
    let at = select(i * p.k + kk, kk * p.m + i, has(TRANS_A));
    return a[z * p.a_stride + at];
}

// op(B)[z][kk][j], zero outside the matrix.
fn load_b(z: u32, kk: u32, j: u32) -> f32 {
    if (j >= p.n || kk >= p.k) { return 0.0; }
    let at = select(kk * p.n + j, j * p.k + kk, has(TRANS_B));
    return b[z * p.b_stride + at];
}

// Writes C[z] at product element (i, j) = alpha·v + epilogue, if inside C.
fn store(z: u32, i: u32, j: u32, v: f32) {
    if (i >= p.m || j >= p.n) { return; }
    let out_t = has(TRANS_OUT);
    let at = z * p.m * p.n + select(i * p.n + j, j * p.m + i, out_t);
    var y = p.alpha * v;
    if (has(BIAS)) { y += bias[select(j, i, out_t)]; }
    if (has(ADDEND)) { y += addend[at]; }
    c[at] = y;
}

// op(A)[z][i..i+4][kk] and op(B)[z][kk][j..j+4]: the four values one vec4 of a tile holds.
fn load_a4(z: u32, i: u32, kk: u32) -> vec4<f32> {
    return vec4<f32>(load_a(z, i, kk), load_a(z, i + 1u, kk), load_a(z, i + 2u, kk), load_a(z, i + 3u, kk));
}

fn load_b4(z: u32, kk: u32, j: u32) -> vec4<f32> {
    return vec4<f32>(load_b(z, kk, j), load_b(z, kk, j + 1u), load_b(z, kk, j + 2u), load_b(z, kk, j + 3u));
}

// Vec4 index e of a slab of `quads` vec4s (rows / 4) by `depth` → (quad, kk). Consecutive
// threads walk k when the operand is stored k-contiguous, so their reads are adjacent, and
// each thread writes whole vec4s of the tile.
fn slab_coords(e: u32, quads: u32, depth: u32, k_contiguous: bool) -> vec2<u32> {
    return select(vec2<u32>(e % quads, e / quads), vec2<u32>(e / depth, e % depth), k_contiguous);
}

// Stores row i, columns j..j+7 of a thread's block (constant accumulator indices keep the
// accumulators in registers; a dynamic index would move them to memory).
fn store_row(z: u32, i: u32, j: u32, v0: vec4<f32>, v1: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        store(z, i, j + q, v0[q]);
        store(z, i, j + 4u + q, v1[q]);
    }
}

// ---- matmul: the general kernel ----

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 16u;
const THREADS: u32 = 128u;

var<workgroup> tile_a: array<vec4<f32>, 512>; // [BK][BM / 4]
var<workgroup> tile_b: array<vec4<f32>, 512>; // [BK][BN / 4]

// 16 rows × 8 columns of accumulators: acc[2r + h] holds row r, columns 4h..4h+3.
fn fma_row(acc: ptr<function, array<vec4<f32>, 32>>, r: u32, x: f32, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[2u * r] += x * b0;
    (*acc)[2u * r + 1u] += x * b1;
}

@compute @workgroup_size(THREADS)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let z = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tx = li % 16u; // columns col0 + 8tx ..
    let ty = li / 16u; // rows row0 + 16ty ..
    var acc: array<vec4<f32>, 32>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var t = 0u; t < BM * BK / 4u / THREADS; t++) {
            let qk = slab_coords(li + t * THREADS, BM / 4u, BK, !has(TRANS_A));
            tile_a[qk.y * (BM / 4u) + qk.x] = load_a4(z, row0 + 4u * qk.x, k0 + qk.y);
        }
        for (var t = 0u; t < BN * BK / 4u / THREADS; t++) {
            let qk = slab_coords(li + t * THREADS, BN / 4u, BK, has(TRANS_B));
            tile_b[qk.y * (BN / 4u) + qk.x] = load_b4(z, k0 + qk.y, col0 + 4u * qk.x);
        }
        workgroupBarrier();
        let depth = min(BK, p.k - k0);
        for (var kk = 0u; kk < depth; kk++) {
            let ra = kk * (BM / 4u) + 4u * ty;
            let a0 = tile_a[ra];
            let a1 = tile_a[ra + 1u];
            let a2 = tile_a[ra + 2u];
            let a3 = tile_a[ra + 3u];
            let b0 = tile_b[kk * (BN / 4u) + 2u * tx];
            let b1 = tile_b[kk * (BN / 4u) + 2u * tx + 1u];
            fma_row(&acc, 0u, a0.x, b0, b1);
            fma_row(&acc, 1u, a0.y, b0, b1);
            fma_row(&acc, 2u, a0.z, b0, b1);
            fma_row(&acc, 3u, a0.w, b0, b1);
            fma_row(&acc, 4u, a1.x, b0, b1);
            fma_row(&acc, 5u, a1.y, b0, b1);
            fma_row(&acc, 6u, a1.z, b0, b1);
            fma_row(&acc, 7u, a1.w, b0, b1);
            fma_row(&acc, 8u, a2.x, b0, b1);
            fma_row(&acc, 9u, a2.y, b0, b1);
            fma_row(&acc, 10u, a2.z, b0, b1);
            fma_row(&acc, 11u, a2.w, b0, b1);
            fma_row(&acc, 12u, a3.x, b0, b1);
            fma_row(&acc, 13u, a3.y, b0, b1);
            fma_row(&acc, 14u, a3.z, b0, b1);
            fma_row(&acc, 15u, a3.w, b0, b1);
        }
        workgroupBarrier();
    }
    store_row(z, row0 + 16u * ty + 0u, col0 + 8u * tx, acc[0], acc[1]);
    store_row(z, row0 + 16u * ty + 1u, col0 + 8u * tx, acc[2], acc[3]);
    store_row(z, row0 + 16u * ty + 2u, col0 + 8u * tx, acc[4], acc[5]);
    store_row(z, row0 + 16u * ty + 3u, col0 + 8u * tx, acc[6], acc[7]);
    store_row(z, row0 + 16u * ty + 4u, col0 + 8u * tx, acc[8], acc[9]);
    store_row(z, row0 + 16u * ty + 5u, col0 + 8u * tx, acc[10], acc[11]);
    store_row(z, row0 + 16u * ty + 6u, col0 + 8u * tx, acc[12], acc[13]);
    store_row(z, row0 + 16u * ty + 7u, col0 + 8u * tx, acc[14], acc[15]);
    store_row(z, row0 + 16u * ty + 8u, col0 + 8u * tx, acc[16], acc[17]);
    store_row(z, row0 + 16u * ty + 9u, col0 + 8u * tx, acc[18], acc[19]);
    store_row(z, row0 + 16u * ty + 10u, col0 + 8u * tx, acc[20], acc[21]);
    store_row(z, row0 + 16u * ty + 11u, col0 + 8u * tx, acc[22], acc[23]);
    store_row(z, row0 + 16u * ty + 12u, col0 + 8u * tx, acc[24], acc[25]);
    store_row(z, row0 + 16u * ty + 13u, col0 + 8u * tx, acc[26], acc[27]);
    store_row(z, row0 + 16u * ty + 14u, col0 + 8u * tx, acc[28], acc[29]);
    store_row(z, row0 + 16u * ty + 15u, col0 + 8u * tx, acc[30], acc[31]);
}

// ---- matmul64: 64×64 tiles, for products whose 128×128 tiles are too few to fill a GPU ----

const SM: u32 = 64u;
const STHREADS: u32 = 64u;

var<workgroup> small_a: array<vec4<f32>, 256>; // [BK][SM / 4]
var<workgroup> small_b: array<vec4<f32>, 256>; // [BK][SM / 4]

// 8 rows × 8 columns of accumulators: acc[2r + h] holds row r, columns 4h..4h+3.
fn fma_row64(acc: ptr<function, array<vec4<f32>, 16>>, r: u32, x: f32, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[2u * r] += x * b0;
    (*acc)[2u * r + 1u] += x * b1;
}

@compute @workgroup_size(STHREADS)
fn matmul64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let z = wid.z;
    let row0 = wid.y * SM;
    let col0 = wid.x * SM;
    let tx = li % 8u; // columns col0 + 8tx ..
    let ty = li / 8u; // rows row0 + 8ty ..
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var t = 0u; t < SM * BK / 4u / STHREADS; t++) {
            let qk = slab_coords(li + t * STHREADS, SM / 4u, BK, !has(TRANS_A));
            small_a[qk.y * (SM / 4u) + qk.x] = load_a4(z, row0 + 4u * qk.x, k0 + qk.y);
            let qb = slab_coords(li + t * STHREADS, SM / 4u, BK, has(TRANS_B));
            small_b[qb.y * (SM / 4u) + qb.x] = load_b4(z, k0 + qb.y, col0 + 4u * qb.x);
        }
        workgroupBarrier();
        let depth = min(BK, p.k - k0);
        for (var kk = 0u; kk < depth; kk++) {
            let ra = kk * (SM / 4u) + 2u * ty;
            let a0 = small_a[ra];
            let a1 = small_a[ra + 1u];
            let b0 = small_b[kk * (SM / 4u) + 2u * tx];
            let b1 = small_b[kk * (SM / 4u) + 2u * tx + 1u];
            fma_row64(&acc, 0u, a0.x, b0, b1);
            fma_row64(&acc, 1u, a0.y, b0, b1);
            fma_row64(&acc, 2u, a0.z, b0, b1);
            fma_row64(&acc, 3u, a0.w, b0, b1);
            fma_row64(&acc, 4u, a1.x, b0, b1);
            fma_row64(&acc, 5u, a1.y, b0, b1);
            fma_row64(&acc, 6u, a1.z, b0, b1);
            fma_row64(&acc, 7u, a1.w, b0, b1);
        }
        workgroupBarrier();
    }
    store_row(z, row0 + 8u * ty + 0u, col0 + 8u * tx, acc[0], acc[1]);
    store_row(z, row0 + 8u * ty + 1u, col0 + 8u * tx, acc[2], acc[3]);
    store_row(z, row0 + 8u * ty + 2u, col0 + 8u * tx, acc[4], acc[5]);
    store_row(z, row0 + 8u * ty + 3u, col0 + 8u * tx, acc[6], acc[7]);
    store_row(z, row0 + 8u * ty + 4u, col0 + 8u * tx, acc[8], acc[9]);
    store_row(z, row0 + 8u * ty + 5u, col0 + 8u * tx, acc[10], acc[11]);
    store_row(z, row0 + 8u * ty + 6u, col0 + 8u * tx, acc[12], acc[13]);
    store_row(z, row0 + 8u * ty + 7u, col0 + 8u * tx, acc[14], acc[15]);
}

// ---- matmul_narrow: few output columns ----

// Each element of op(A) is used by one thread only, so the narrow kernel reads op(A)
// straight into registers and stages only op(B), the operand every thread shares.
const NM: u32 = 256u;
const NN: u32 = 8u;
const NK: u32 = 32u;
const NTHREADS: u32 = 32u;

var<workgroup> narrow_b: array<vec4<f32>, 64>; // [NK][NN / 4]

// 8 rows × 8 columns: acc[2r + h] holds row r, columns 4h..4h+3.
fn fma_row8(acc: ptr<function, array<vec4<f32>, 16>>, r: u32, x: f32, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[2u * r] += x * b0;
    (*acc)[2u * r + 1u] += x * b1;
}

// With k_split > 0 (one matrix only), workgroup z sums only k in [z·k_split, (z+1)·k_split)
// and writes its partial product as matrix z of C, without the epilogue; the host adds
// the partials. A product of few rows and long k then spreads over more workgroups.
@compute @workgroup_size(NTHREADS)
fn matmul_narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let split = p.k_split > 0u;
    let z = select(wid.z, 0u, split); // the matrix of A and B
    let k_lo = select(0u, wid.z * p.k_split, split);
    let k_hi = select(p.k, min(p.k, k_lo + p.k_split), split);
    let i0 = wid.y * NM + 8u * li; // rows i0 .. i0 + 7
    let col0 = wid.x * NN;
    var acc: array<vec4<f32>, 16>;
    for (var k0 = k_lo; k0 < k_hi; k0 += NK) {
        for (var t = 0u; t < NN * NK / 4u / NTHREADS; t++) {
            let qk = slab_coords(li + t * NTHREADS, NN / 4u, NK, has(TRANS_B));
            narrow_b[qk.y * (NN / 4u) + qk.x] = load_b4(z, k0 + qk.y, col0 + 4u * qk.x);
        }
        workgroupBarrier();
        let depth = min(NK, k_hi - k0);
        for (var kk = 0u; kk < depth; kk++) {
            let k = k0 + kk;
            let b0 = narrow_b[kk * 2u];
            let b1 = narrow_b[kk * 2u + 1u];
            fma_row8(&acc, 0u, load_a(z, i0, k), b0, b1);
            fma_row8(&acc, 1u, load_a(z, i0 + 1u, k), b0, b1);
            fma_row8(&acc, 2u, load_a(z, i0 + 2u, k), b0, b1);
            fma_row8(&acc, 3u, load_a(z, i0 + 3u, k), b0, b1);
            fma_row8(&acc, 4u, load_a(z, i0 + 4u, k), b0, b1);
            fma_row8(&acc, 5u, load_a(z, i0 + 5u, k), b0, b1);
            fma_row8(&acc, 6u, load_a(z, i0 + 6u, k), b0, b1);
            fma_row8(&acc, 7u, load_a(z, i0 + 7u, k), b0, b1);
        }
        workgroupBarrier();
    }
    let zc = wid.z; // the matrix of C: the batch, or the k-chunk's partial
    store_row(zc, i0 + 0u, col0, acc[0], acc[1]);
    store_row(zc, i0 + 1u, col0, acc[2], acc[3]);
    store_row(zc, i0 + 2u, col0, acc[4], acc[5]);
    store_row(zc, i0 + 3u, col0, acc[6], acc[7]);
    store_row(zc, i0 + 4u, col0, acc[8], acc[9]);
    store_row(zc, i0 + 5u, col0, acc[10], acc[11]);
    store_row(zc, i0 + 6u, col0, acc[12], acc[13]);
    store_row(zc, i0 + 7u, col0, acc[14], acc[15]);
}
