// The MoPPA filter laid out for GPUs: one workgroup per (image, tile of TC channels), the
// tile's grid in workgroup memory, each transform a 16-term dot product per thread.
//
//   spectral_tile (mode 0):  y = C_hᵀ·( (C_h·x·C_wᵀ) ⊙ r )·C_w     per channel (the filter)
//   spectral_tile (mode 1):  y = C_h·x·C_wᵀ                          per channel (the spectrum)
//
// x: tokens [B, T, C]; the last gh·gw tokens of each image are the grid (row-major), the
// `prefix` tokens before them are copied through (mode 0) or left out (mode 1, whose output
// is [B, gh·gw, C]). r: [gh·gw, C]. tables: cos(π·m/(2gh)) for m in 0..4gh, then the same for
// gw (host: ops::dct::GridPlan). Output y as above.
//
// Threads: TC channels × 16 lanes. Lane i owns grid row i in the row passes and grid column i
// in the column pass; a thread reads its line into registers, transforms it and writes it
// back in place, so one grid buffer suffices and the column pass (forward, ⊙r, inverse) needs
// no barrier. The DCT matrices are zero-padded to 16 × 16, so every loop has 16 steps and
// unrolls; every register array is indexed by a loop counter of a 16-step loop only (a
// runtime bound would index it dynamically and move it to local memory on GPUs, 4× slower on
// an H200). Adjacent threads own adjacent channels: global accesses are coalesced and
// workgroup memory is read without bank conflicts. Grids up to 16 × 16. Barriers must be
// reached by every thread, so instead of returning early, idle threads skip the work.
// Params `TileParams` (host: ops::spectral_tile::TileParams).

const TC: u32 = 16u;
const SIDE: u32 = 16u;

struct TileParams {
    batch: u32,
    tokens: u32,
    prefix: u32,
    gh: u32,
    gw: u32,
    channels: u32,
    mode: u32,
    s0h: f32,
    sh: f32,
    s0w: f32,
    sw: f32,
}

var<immediate> p: TileParams;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> r: array<f32>;
@group(0) @binding(2) var<storage, read> tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> grid: array<f32, 4096>; // SIDE * SIDE * TC: cell-major, channel-minor
var<workgroup> mat_h: array<f32, 256>; // C_h[k][n] at k * SIDE + n, zero outside gh × gh
var<workgroup> mat_w: array<f32, 256>; // C_w[l][m] at l * SIDE + m, zero outside gw × gw

fn dct_entry(k: u32, n: u32, len: u32, base: u32, s0: f32, s: f32) -> f32 {
    if (k >= len || n >= len) { return 0.0; }
    return select(s, s0, k == 0u) * tables[base + ((2u * n + 1u) * k) % (4u * len)];
}

@compute @workgroup_size(256)
fn spectral_tile(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let gh = p.gh;
    let gw = p.gw;
    let cells = gh * gw;
    let c = li % TC;
    let lane = li / TC;
    let channel = wid.x * TC + c;
    let live = channel < p.channels;
    let b = wid.y;
    let img = b * p.tokens;
    let first = img + p.prefix;
    mat_h[li] = dct_entry(li / SIDE, li % SIDE, gh, 0u, p.s0h, p.sh);
    mat_w[li] = dct_entry(li / SIDE, li % SIDE, gw, 4u * gh, p.s0w, p.sw);
    for (var cell = lane; cell < cells; cell += SIDE) {
        var v = 0.0;
        if (live) { v = x[(first + cell) * p.channels + channel]; }
        grid[cell * TC + c] = v;
    }
    if (p.mode == 0u && live) {
        for (var t = lane; t < p.prefix; t += SIDE) {
            y[(img + t) * p.channels + channel] = x[(img + t) * p.channels + channel];
        }
    }
    workgroupBarrier();
    var v: array<f32, 16>;
    var s: array<f32, 16>;
    // Rows: row i ← C_w · row i.
    if (lane < gh) {
        for (var m = 0u; m < SIDE; m++) {
            // Not a select: past gw the cell is the next row's, which its lane rewrites
            // below without a barrier in between.
            v[m] = 0.0;
            if (m < gw) { v[m] = grid[(lane * gw + m) * TC + c]; }
        }
        for (var l = 0u; l < SIDE; l++) {
            var acc = 0.0;
            for (var m = 0u; m < SIDE; m++) { acc += mat_w[l * SIDE + m] * v[m]; }
            s[l] = acc;
        }
        for (var l = 0u; l < SIDE; l++) {
            if (l < gw) { grid[(lane * gw + l) * TC + c] = s[l]; }
        }
    }
    workgroupBarrier();
    // Columns: spectrum S = C_h · column; mode 0: S ⊙ r, then column ← C_hᵀ · S.
    if (lane < gw) {
        for (var n = 0u; n < SIDE; n++) {
            v[n] = select(0.0, grid[(n * gw + lane) * TC + c], n < gh);
        }
        for (var k = 0u; k < SIDE; k++) {
            var acc = 0.0;
            for (var n = 0u; n < SIDE; n++) { acc += mat_h[k * SIDE + n] * v[n]; }
            s[k] = acc;
        }
        if (p.mode == 1u) {
            for (var k = 0u; k < SIDE; k++) {
                if (live && k < gh) { y[(b * cells + k * gw + lane) * p.channels + channel] = s[k]; }
            }
        } else {
            for (var k = 0u; k < SIDE; k++) {
                if (live && k < gh) { s[k] *= r[(k * gw + lane) * p.channels + channel]; }
            }
            for (var n = 0u; n < SIDE; n++) {
                var acc = 0.0;
                for (var k = 0u; k < SIDE; k++) { acc += mat_h[k * SIDE + n] * s[k]; }
                v[n] = acc;
            }
            for (var n = 0u; n < SIDE; n++) {
                if (n < gh) { grid[(n * gw + lane) * TC + c] = v[n]; }
            }
        }
    }
    workgroupBarrier();
    // Inverse rows, written out: row i ← C_wᵀ · row i.
    if (p.mode == 0u && lane < gh && live) {
        for (var l = 0u; l < SIDE; l++) {
            v[l] = select(0.0, grid[(lane * gw + l) * TC + c], l < gw);
        }
        for (var m = 0u; m < SIDE; m++) {
            var acc = 0.0;
            for (var l = 0u; l < SIDE; l++) { acc += mat_w[l * SIDE + m] * v[l]; }
            if (m < gw) { y[(first + lane * gw + m) * p.channels + channel] = acc; }
        }
    }
}
