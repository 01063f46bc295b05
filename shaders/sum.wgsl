// Sums: over the rows of a matrix, and over all elements of a flat array.
//
//   sum_rows: out[c, j] = scale · Σ_{r in chunk c} a[r, j]     a viewed [rows, cols]
//             chunk c holds rows c·per_chunk .. min((c+1)·per_chunk, rows). The host runs
//             it twice (chunks, then the chunk sums) for many rows: bias gradients, sums
//             over broadcast axes.
//   sum_all:  out[g] = scale · Σ_{i in block g} a[i]           block g = [g·BLOCK, (g+1)·BLOCK)
//             Each thread adds ITEMS elements strided by WG, then the workgroup adds the WG
//             partial sums as a binary tree. The host repeats it on the block sums until
//             one value is left, so a sum of n terms has depth about ITEMS + log2(n), not n.
//
// Layout: input a (read-only), then the output; params `SumParams` (host:
// ops::sum::SumParams). sum_rows: one thread per (column, chunk) on the grid
// [ceil(cols / WG), chunks, 1]. sum_all: one workgroup per block on a 1-D grid of
// workgroups that may fold into two dimensions (g = wid.x + wid.y · num_workgroups.x).

const WG: u32 = 256u;
const ITEMS: u32 = 8u;
const BLOCK: u32 = 2048u; // WG · ITEMS

struct SumParams {
    rows: u32,
    cols: u32,
    per_chunk: u32,
    scale: f32,
}

var<immediate> p: SumParams;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn sum_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= p.cols) { return; }
    let chunk = gid.y;
    let end = min((chunk + 1u) * p.per_chunk, p.rows);
    var acc = 0.0;
    for (var r = chunk * p.per_chunk; r < end; r++) {
        acc += a[r * p.cols + col];
    }
    out[chunk * p.cols + col] = p.scale * acc;
}

var<workgroup> partial: array<f32, WG>;

// For sum_all, `rows` is the number of elements and `cols` the number of blocks.
@compute @workgroup_size(WG)
fn sum_all(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.cols) { return; } // uniform over the workgroup, so the barriers stay valid
    let start = g * BLOCK;
    var acc = 0.0;
    for (var t = 0u; t < ITEMS; t++) {
        let i = start + t * WG + li;
        if (i < p.rows) { acc += a[i]; }
    }
    partial[li] = acc;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (li < half) {
            partial[li] += partial[li + half];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out[g] = p.scale * partial[0];
    }
}
