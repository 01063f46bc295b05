// Data movement: permuting axes, copying blocks along an axis, broadcasting, patchify.
//
//   permute:       y[i0, i1, i2, i3] = x[i0·s0 + i1·s1 + i2·s2 + i3·s3]
//                  y has shape [d0, d1, d2, d3] (rank < 4 padded in front with 1s); s are
//                  the strides of x for the axes that land at y's positions.
//   copy_block:    dst[o, dst_off + a, i] = src[o, src_off + a, i]
//                  src viewed [outer, src_axis, inner], dst [outer, dst_axis, inner],
//                  a < len; only this block of dst is written (concat and slice).
//   add_broadcast: y[j] = x[j] + e[j mod inner]     (e over the trailing axes of x)
//   expand:        y[j] = alpha · x[j mod inner]    (x repeated over new leading axes)
//   patchify:      y[b, py·gw + px, (c·p + kh)·p + kw] = img[b, c, py·p + kh, px·p + kw]
//                  img [B, C, H, W] → patch rows [B, gh·gw, C·p·p], gh = ⌊H/p⌋, gw = ⌊W/p⌋;
//                  the inner order (c, kh, kw) is a conv weight [D, C, p, p] flattened.
//   unpatchify:    the adjoint of patchify: img[b, c, y, x] = g[b, patch, col] for the one
//                  (patch, col) that reads (y, x) (stride = kernel, so no overlap), 0 for
//                  pixels beyond gh·p or gw·p that no patch reads.
//
// Layout: read-only inputs first (x or src; e for add_broadcast), then the output. Each
// kernel has its own params struct (hosts in ops::shape and ops::patch). One thread per
// output element on a 1-D grid that may fold into two dimensions:
// index = gid.x + gid.y · num_workgroups.x · WG.

const WG: u32 = 256u;

struct PermuteParams {
    n: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    s3: u32,
}

struct BlockParams {
    n: u32,
    len: u32,
    inner: u32,
    src_axis: u32,
    dst_axis: u32,
    src_off: u32,
    dst_off: u32,
    _pad: u32,
}

struct BroadcastParams {
    n: u32,
    inner: u32,
    alpha: f32,
    _pad: u32,
}

struct PatchParams {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    ph: u32,
    pw: u32,
    gh: u32,
    gw: u32,
}

var<immediate> pp: PermuteParams;
var<immediate> bp: BlockParams;
var<immediate> cp: BroadcastParams;
var<immediate> ip: PatchParams;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= pp.n) { return; }
    let i3 = j % pp.d3;
    let t = j / pp.d3;
    let i2 = t % pp.d2;
    let i1 = (t / pp.d2) % pp.d1;
    let i0 = t / (pp.d2 * pp.d1);
    y[j] = x[i0 * pp.s0 + i1 * pp.s1 + i2 * pp.s2 + i3 * pp.s3];
}

@compute @workgroup_size(WG)
fn copy_block(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= bp.n) { return; }
    let i = j % bp.inner;
    let t = j / bp.inner;
    let a = t % bp.len;
    let o = t / bp.len;
    y[(o * bp.dst_axis + bp.dst_off + a) * bp.inner + i] = x[(o * bp.src_axis + bp.src_off + a) * bp.inner + i];
}

@compute @workgroup_size(WG)
fn expand(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= cp.n) { return; }
    y[j] = cp.alpha * x[j % cp.inner];
}

@compute @workgroup_size(WG)
fn patchify(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= ip.n) { return; }
    let area = ip.ph * ip.pw;
    let cols = ip.channels * area;
    let col = j % cols;
    let row = j / cols;
    let cell = row % (ip.gh * ip.gw);
    let b = row / (ip.gh * ip.gw);
    let c = col / area;
    let kh = (col % area) / ip.pw;
    let kw = col % ip.pw;
    let py = cell / ip.gw;
    let px = cell % ip.gw;
    y[j] = x[((b * ip.channels + c) * ip.height + py * ip.ph + kh) * ip.width + px * ip.pw + kw];
}

@compute @workgroup_size(WG)
fn unpatchify(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= ip.n) { return; }
    let px_x = j % ip.width;
    let t = j / ip.width;
    let px_y = t % ip.height;
    let c = (t / ip.height) % ip.channels;
    let b = t / (ip.height * ip.channels);
    let py = px_y / ip.ph;
    let px = px_x / ip.pw;
    if (py >= ip.gh || px >= ip.gw) {
        y[j] = 0.0;
        return;
    }
    let row = b * ip.gh * ip.gw + py * ip.gw + px;
    let col = (c * ip.ph + px_y % ip.ph) * ip.pw + px_x % ip.pw;
    y[j] = x[row * ip.channels * ip.ph * ip.pw + col];
}

@group(0) @binding(1) var<storage, read> e: array<f32>;
@group(0) @binding(2) var<storage, read_write> sum_y: array<f32>;

@compute @workgroup_size(WG)
fn add_broadcast(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat(gid, nwg);
    if (j >= cp.n) { return; }
    sum_y[j] = x[j] + e[j % cp.inner];
}
