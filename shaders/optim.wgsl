// Fused optimizer steps over every parameter at once (host: src/optim/mod.rs).
//
// The optimizer packs all parameters end to end into flat buffers; element i of the flat
// buffers belongs to the segment (parameter) whose range holds it. One dispatch updates
// every parameter.
//
//   sgd_step:    g' = g + wd·p                       (wd = p.decay; 0 when not given)
//                p  ← p − lr·g'                      (lr = the step size)
//   adamw_step:  (torch.optim.AdamW, decoupled weight decay, in torch's order of operations)
//                p  ← p · (1 − lr·wd)                (p.decay = 1 − lr·wd)
//                m  ← m + (1 − β1)·(g − m)           (torch's lerp; = β1·m + (1 − β1)·g)
//                v  ← β2·v + (1 − β2)·g²
//                p  ← p − (lr / bc1) · m / (√v / √bc2 + ε),   bc1 = 1 − β1^t, bc2 = 1 − β2^t
//
// The host computes the bias corrections in f64 for each parameter's own step count t and
// passes step size = lr/bc1 (lr for SGD) and √bc2 in f32.
//
// Layout: inputs grad (flat gradients), segments (the table below), then the outputs param,
// and for AdamW exp_avg (m) and exp_avg_sq (v); params `OptimParams` (host:
// optim::OptimParams). One thread per element; the 1-D grid may fold into two dimensions.
//
// When p.segments == 0 every element takes the step size and √bc2 of the params (all
// parameters have a gradient and the same step count, the usual case, so nothing is uploaded
// per step). Otherwise the table holds p.segments records sorted by start; the element's
// record is the last one starting at or before it (a parameter with no elements starts where
// the next one does), and a record with updated == 0 leaves its elements untouched (a
// parameter without a gradient this step keeps its value and its moments).

const WG: u32 = 256u;

struct OptimParams {
    n: u32,
    segments: u32,
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
}

// Host twin: optim::Segment.
struct Segment {
    start: u32,
    updated: u32,
    step_size: f32,
    bc2_sqrt: f32,
}

var<immediate> p: OptimParams;

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The segment of element i (binary search; segments[0].start == 0).
fn segment_of(i: u32) -> Segment {
    var lo = 0u;
    var hi = p.segments;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (segments[mid].start <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return segments[lo];
}

// The step size and √bc2 of element i: x = step size, y = √bc2, z = 0 when it must stay.
fn coefficients(i: u32) -> vec3<f32> {
    if (p.segments == 0u) {
        return vec3<f32>(p.step_size, p.bc2_sqrt, 1.0);
    }
    let s = segment_of(i);
    return vec3<f32>(s.step_size, s.bc2_sqrt, f32(s.updated));
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coefficients(i);
    if (c.z == 0.0) { return; }
    let w = param[i];
    let g = grad[i] + p.decay * w;
    param[i] = w - c.x * g;
}

@compute @workgroup_size(WG)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coefficients(i);
    if (c.z == 0.0) { return; }
    let g = grad[i];
    let w = param[i] * p.decay;
    let m0 = exp_avg[i];
    let m = m0 + p.one_minus_beta1 * (g - m0);
    let v = exp_avg_sq[i] * p.beta2 + p.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v) / c.y + p.eps;
    param[i] = w - c.x * m / denom;
}
