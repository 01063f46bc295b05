// Elementwise kernels over flat f32 arrays of length p.n.
//
//   fill:   y[i] = p.alpha
//   add:    y[i] = a[i] + b[i]
//   mul:    y[i] = a[i] * b[i]
//   axpby:  y[i] = p.alpha * a[i] + p.beta * b[i]
//   scale:  y[i] = p.alpha * a[i]
//
// Layout: inputs a, b (read-only), then the output y; params `EwParams` (host:
// ops::elementwise::EwParams). One thread per element; the 1-D grid may fold into two
// dimensions, so the index is gid.x + gid.y * num_workgroups.x * WG.

const WG: u32 = 256u;

struct EwParams {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

var<immediate> p: EwParams;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read_write> fill_y: array<f32>;

@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    fill_y[i] = p.alpha;
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = a[i] + b[i];
}

@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = a[i] * b[i];
}

@compute @workgroup_size(WG)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = p.alpha * a[i] + p.beta * b[i];
}

@group(0) @binding(1) var<storage, read_write> scale_y: array<f32>;

@compute @workgroup_size(WG)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    scale_y[i] = p.alpha * a[i];
}
