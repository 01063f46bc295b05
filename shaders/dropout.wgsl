// Inverted dropout with a counter-based mask, so the backward pass regenerates the mask
// instead of storing it.
//
//   dropout:  y[i] = keep(i + p.offset) ? x[i] · p.scale : 0,   keep(k) = h(h(k ^ seed_lo) + seed_hi) ≥ p.threshold
//
// (indices wrap at 2³²). The offset makes the mask of a slice of a larger tensor that
// tensor's mask over the slice, so a batch computed in pieces draws the batch's mask.
// h is a 32-bit integer mixer (xor-shift-multiply rounds). The map x ↦ y is diagonal, hence
// self-adjoint: the backward is this kernel applied to ∂y with the same seed.
// Layout: input x, then the output y; params `DropoutParams` (host: ops::dropout::DropoutParams).
// One thread per element; the 1-D grid may fold into two dimensions.

const WG: u32 = 256u;

struct DropoutParams {
    n: u32,
    threshold: u32,
    seed_lo: u32,
    seed_hi: u32,
    scale: f32,
    offset: u32,
    _pad1: u32,
    _pad2: u32,
}

var<immediate> p: DropoutParams;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

fn mix(v: u32) -> u32 {
    var h = v;
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    h = h ^ (h >> 16u);
    return h;
}

@compute @workgroup_size(WG)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) { return; }
    let keep = mix(mix((i + p.offset) ^ p.seed_lo) + p.seed_hi) >= p.threshold;
    y[i] = select(0.0, x[i] * p.scale, keep);
}
