// Reductions that other kernel families finish with.
//
//   column_sums:  partial[c, j] = Σ_{r in chunk c} a[r, j]   for a [rows, cols]
//                 chunk c holds rows c·rows_per_chunk .. min((c+1)·rows_per_chunk, rows);
//                 with rows_per_chunk ≥ rows it is the plain column sum. Used twice for a
//                 two-stage reduction (no float atomics): bias and LayerNorm γ/β gradients.
//   mean:         y[0] = Σ_i a[i] / rows      for a [rows]; one workgroup.
//
// Layout: input a (read-only), then the output; params `ReduceParams` (host:
// ops::reduce::ReduceParams). column_sums runs one thread per (column, chunk) on the grid
// [ceil(cols / WG), chunks, 1].

const WG: u32 = 256u;

struct ReduceParams {
    rows: u32,
    cols: u32,
    rows_per_chunk: u32,
    _pad: u32,
}

var<immediate> p: ReduceParams;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn column_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= p.cols) { return; }
    let chunk = gid.y;
    let first = chunk * p.rows_per_chunk;
    let end = min(first + p.rows_per_chunk, p.rows);
    var acc = 0.0;
    for (var r = first; r < end; r++) {
        acc += a[r * p.cols + col];
    }
    out[chunk * p.cols + col] = acc;
}

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (wid.x > 0u) { return; }
    var acc = 0.0;
    for (var i = lid; i < p.rows; i += WG) {
        acc += a[i];
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[0] = red[0] / f32(p.rows);
    }
}
