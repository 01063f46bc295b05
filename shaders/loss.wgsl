// Cross-entropy with integer labels.
//
//   cross_entropy_rows:      per row n of logits [rows, classes] with label t = labels[n]:
//       m = max_k l_k,   lse = m + log Σ_k exp(l_k − m),   loss[n] = lse − l_t
//       correct[n] = 1 if the first index of the maximum equals t, else 0
//       A label ≥ classes is never used as an index: its row gets loss NaN and correct 0.
//   cross_entropy_backward:  ∂l[n, k] = (exp(l[n, k] − lse[n]) − [k = t_n]) · ∂loss / rows
//       (the gradient of the mean over rows; ∂loss is the scalar dloss[0]); a row whose label
//       is ≥ classes gets NaN, as its loss did, so an unchecked label cannot train quietly
//
// Layout: logits [rows, classes] f32, labels [rows] u32, loss/lse/correct [rows], dloss [1],
// ∂logits [rows, classes]. Params `LossParams` (host: ops::loss::LossParams).
// cross_entropy_rows runs one workgroup per row (row = wid.x + wid.y·nwg.x);
// cross_entropy_backward one thread per logit.

const WG: u32 = 256u;

struct LossParams {
    rows: u32,
    classes: u32,
    _pad0: u32,
    _pad1: u32,
}

var<immediate> p: LossParams;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

struct Best {
    value: f32,
    index: u32,
}

// The maximum and the first index holding it, over the workgroup; every invocation
// receives it.
fn workgroup_argmax(v: f32, i: u32, lid: u32) -> Best {
    red_v[lid] = v;
    red_i[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let ov = red_v[lid + s];
            let oi = red_i[lid + s];
            if (ov > red_v[lid] || (ov == red_v[lid] && oi < red_i[lid])) {
                red_v[lid] = ov;
                red_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let best = Best(red_v[0], red_i[0]);
    workgroupBarrier();
    return best;
}

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red_v[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_v[lid] += red_v[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_v[0];
    workgroupBarrier();
    return total;
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> correct: array<f32>;

@compute @workgroup_size(WG)
fn cross_entropy_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.classes;
    var m = -3.4028235e38;
    var arg = 0xffffffffu;
    for (var k = lid; k < p.classes; k += WG) {
        let v = logits[base + k];
        if (v > m || arg == 0xffffffffu) {
            m = v;
            arg = k;
        }
    }
    let best = workgroup_argmax(m, arg, lid);
    let top = best.value;
    var s = 0.0;
    for (var k = lid; k < p.classes; k += WG) {
        s += exp(logits[base + k] - top);
    }
    let total = top + log(workgroup_sum(s, lid));
    if (lid == 0u) {
        let t = labels[row];
        var l = bitcast<f32>(0x7fc00000u); // NaN marks a label out of range
        if (t < p.classes) {
            l = total - logits[base + t];
        }
        loss[row] = l;
        lse[row] = total;
        correct[row] = select(0.0, 1.0, best.index == t);
    }
}

@group(0) @binding(2) var<storage, read> bw_lse: array<f32>;
@group(0) @binding(3) var<storage, read> bw_dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_dlogits: array<f32>;

@compute @workgroup_size(WG)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.rows * p.classes) { return; }
    let row = i / p.classes;
    let k = i - row * p.classes;
    let t = labels[row];
    let onehot = select(0.0, 1.0, t == k);
    var g = (exp(logits[i] - bw_lse[row]) - onehot) * (bw_dloss[0] / f32(p.rows));
    if (t >= p.classes) {
        g = bitcast<f32>(0x7fc00000u);
    }
    bw_dlogits[i] = g;
}
