// General 2-D convolution, PyTorch's F.conv2d (cross-correlation, dilation 1), direct form.
//
//   x [B, Cin, H, W], w [Cout, Cin/G, KH, KW], bias [Cout], G groups; Cin and Cout divisible
//   by G. Output channel o belongs to group g = o / (Cout/G) and reads input channels
//   g·(Cin/G) .. (g+1)·(Cin/G). With ih = oh·SH − PH + i, iw = ow·SW − PW + j (zero outside):
//
//   conv2d:             y[b,o,oh,ow] = bias[o] + Σ_{c<Cin/G, i<KH, j<KW} x[b, g·Cin/G + c, ih, iw] · w[o,c,i,j]
//   conv2d_grad_input:  ∂x[b,ci,ih,iw] = Σ_{o in ci's group, i, j} ∂y[b,o,oh,ow] · w[o, ci mod Cin/G, i, j]
//                       over the (oh, ow) with oh·SH = ih + PH − i (and the same for ow) inside the output
//   conv2d_grad_weight: part[k, o,c,i,j] = Σ_{q in chunk k} ∂y[b,o,oh,ow] · x[b, g·Cin/G + c, ih, iw]
//                       q = (b·OH + oh)·OW + ow runs over batch and positions; chunk k holds
//                       q = k·per_chunk .. min((k+1)·per_chunk, B·OH·OW). The host sums the chunks.
//   conv2d_grad_bias:   part[k, o] = Σ_{q in chunk k} ∂y[b,o,oh,ow]
//
// Layout: read-only inputs then the output, in the order of the formulas (conv2d: x, w, bias;
// grad_input: dy, w; grad_weight: dy, x; grad_bias: dy); params `ConvParams` (host:
// ops::conv::ConvParams). One thread per output element on a 1-D grid that may fold into two
// dimensions (index gid.x + gid.y · num_workgroups.x · WG); p.n is the number of outputs.

const WG: u32 = 256u;

struct ConvParams {
    n: u32,
    batch: u32,
    cin: u32,
    height: u32,
    width: u32,
    cout: u32,
    out_h: u32,
    out_w: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    groups: u32,
    per_chunk: u32,
}

var<immediate> p: ConvParams;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Input row (or column) read by output row `o` at kernel offset `k`; negative or ≥ size when
// it falls in the padding.
fn input_pos(o: u32, k: u32, stride: u32, pad: u32) -> i32 {
    return i32(o * stride + k) - i32(pad);
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.n) { return; }
    let ow = idx % p.out_w;
    let oh = (idx / p.out_w) % p.out_h;
    let o = (idx / (p.out_w * p.out_h)) % p.cout;
    let b = idx / (p.out_w * p.out_h * p.cout);
    let cpg_in = p.cin / p.groups;
    let g = o / (p.cout / p.groups);
    var acc = bias[o];
    for (var c = 0u; c < cpg_in; c++) {
        let x_plane = (b * p.cin + g * cpg_in + c) * p.height;
        let w_plane = (o * cpg_in + c) * p.kh;
        for (var i = 0u; i < p.kh; i++) {
            let ih = input_pos(oh, i, p.stride_h, p.pad_h);
            if (ih < 0 || ih >= i32(p.height)) { continue; }
            for (var j = 0u; j < p.kw; j++) {
                let iw = input_pos(ow, j, p.stride_w, p.pad_w);
                if (iw < 0 || iw >= i32(p.width)) { continue; }
                acc += x[(x_plane + u32(ih)) * p.width + u32(iw)] * w[(w_plane + i) * p.kw + j];
            }
        }
    }
    y[idx] = acc;
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

// Output index `o` with o·stride = pos + pad − k, or -1 when none lies inside [0, size).
fn output_pos(pos: u32, k: u32, stride: u32, pad: u32, size: u32) -> i32 {
    let t = i32(pos + pad) - i32(k);
    if (t < 0 || u32(t) % stride != 0u) { return -1; }
    let o = u32(t) / stride;
    if (o >= size) { return -1; }
    return i32(o);
}

@compute @workgroup_size(WG)
fn conv2d_grad_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.n) { return; }
    let iw = idx % p.width;
    let ih = (idx / p.width) % p.height;
    let ci = (idx / (p.width * p.height)) % p.cin;
    let b = idx / (p.width * p.height * p.cin);
    let cpg_in = p.cin / p.groups;
    let cpg_out = p.cout / p.groups;
    let g = ci / cpg_in;
    let c = ci % cpg_in;
    var acc = 0.0;
    for (var o = g * cpg_out; o < (g + 1u) * cpg_out; o++) {
        let dy_plane = (b * p.cout + o) * p.out_h;
        let w_plane = (o * cpg_in + c) * p.kh;
        for (var i = 0u; i < p.kh; i++) {
            let oh = output_pos(ih, i, p.stride_h, p.pad_h, p.out_h);
            if (oh < 0) { continue; }
            for (var j = 0u; j < p.kw; j++) {
                let ow = output_pos(iw, j, p.stride_w, p.pad_w, p.out_w);
                if (ow < 0) { continue; }
                acc += dy[(dy_plane + u32(oh)) * p.out_w + u32(ow)] * w[(w_plane + i) * p.kw + j];
            }
        }
    }
    dx[idx] = acc;
}

@group(0) @binding(1) var<storage, read> gw_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw_part: array<f32>;

@compute @workgroup_size(WG)
fn conv2d_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.n) { return; }
    let cpg_in = p.cin / p.groups;
    let weights = p.cout * cpg_in * p.kh * p.kw;
    let chunk = idx / weights;
    let k = idx % weights;
    let j = k % p.kw;
    let i = (k / p.kw) % p.kh;
    let c = (k / (p.kw * p.kh)) % cpg_in;
    let o = k / (p.kw * p.kh * cpg_in);
    let ci = (o / (p.cout / p.groups)) * cpg_in + c;
    let positions = p.out_h * p.out_w;
    let end = min((chunk + 1u) * p.per_chunk, p.batch * positions);
    var acc = 0.0;
    for (var q = chunk * p.per_chunk; q < end; q++) {
        let ow = q % p.out_w;
        let oh = (q / p.out_w) % p.out_h;
        let b = q / positions;
        let ih = input_pos(oh, i, p.stride_h, p.pad_h);
        let iw = input_pos(ow, j, p.stride_w, p.pad_w);
        if (ih < 0 || ih >= i32(p.height) || iw < 0 || iw >= i32(p.width)) { continue; }
        let g = dy[((b * p.cout + o) * p.out_h + oh) * p.out_w + ow];
        acc += g * gw_x[((b * p.cin + ci) * p.height + u32(ih)) * p.width + u32(iw)];
    }
    dw_part[idx] = acc;
}

@group(0) @binding(1) var<storage, read_write> db_part: array<f32>;

@compute @workgroup_size(WG)
fn conv2d_grad_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.n) { return; }
    let chunk = idx / p.cout;
    let o = idx % p.cout;
    let positions = p.out_h * p.out_w;
    let end = min((chunk + 1u) * p.per_chunk, p.batch * positions);
    var acc = 0.0;
    for (var q = chunk * p.per_chunk; q < end; q++) {
        let b = q / positions;
        acc += dy[(b * p.cout + o) * positions + q % positions];
    }
    db_part[idx] = acc;
}
