// Fused multi-head attention for CPU adapters (lavapipe), forward and backward.
//
//   o_i = Σ_j P_ij v_j,   P_ij = softmax_j(s_ij),   s_ij = scale · q_i·k_j   (per head)
//   lse_i = log Σ_j exp(s_ij)                      (saved for the backward)
//   backward, with D_i = Σ_c ∂o_ic o_ic:
//   ∂s_ij = P_ij (∂o_i·v_j − D_i),   ∂q_i = scale Σ_j ∂s_ij k_j,
//   ∂k_j = scale Σ_i ∂s_ij q_i,      ∂v_j = Σ_i P_ij ∂o_i
//
// q, k, v, o and their gradients are tokens [B, T, D] with head h in channels
// h·dh .. h·dh + dh (as the linear layers make them: no permutes), read as vec4s; lse and D
// are [B, H, T]. The scores never reach memory (P is recomputed from lse in the backward).
// Needs D % 4 = 0, dh % 4 = 0 and dh ≤ 64 (host: ops::attention).
//
// Why this shape: a CPU driver runs a workgroup's invocations as SIMD lanes, and every load
// whose address is not built from constants and immediates alone costs tens of instructions
// per component (Mesa's lavapipe loops over the lanes), while a multiply-add costs one, and
// register arrays stay in registers only under constant indices. So a workgroup is 8 lanes;
// each lane keeps 4 queries (forward, ∂q) or 4 keys (∂k, ∂v) with their head rows in
// registers, padded to 16 vec4s (channels past dh are zero and never stored), and in the
// loop over the other side's tokens each lane loads four vec4s of a row (s, s + 4, s + 8,
// s + 12 for s = sg mod 4) and subgroupBroadcast from constant lanes hands every lane the
// whole row; lanes 4..7 load what lanes 0..3 do, so subgroups of 4 lanes work as well as of
// 8 or more. Needs subgroups of at least 4 lanes (host: ops::attention::fused_kernels_run_on).
// Lanes past the last token repeat the last one and store the same values to the same place.
//
//   attention_forward:     inputs q, k, v; outputs o, lse.         grid [⌈T/32⌉, H, B]
//   attention_backward_q:  inputs q, k, v, o, ∂o, lse; outputs ∂q, D. grid [⌈T/32⌉, H, B]
//   attention_backward_kv: inputs q, k, v, ∂o, lse, D; outputs ∂k, ∂v. grid [⌈T/32⌉, H, B]
// The grid is exact in heads and batch (wid.y < H, wid.z < B, as the host dispatches it); only
// the token axis is ragged, handled by repeating the last token as above.
// Params `AttentionParams` (host: ops::attention::AttentionParams).

struct AttentionParams {
    batch: u32,
    tokens: u32,
    heads: u32,
    d4: u32,
    dh4: u32,
    scale: f32,
}

const LANES: u32 = 8u;
const SHARE: u32 = 4u; // lanes that share a row: the smallest subgroup the host allows

var<immediate> p: AttentionParams;

// Index of vec4 c of head h of token t in batch b (c clamped into the head).
fn q_idx(b: u32, t: u32, h: u32, c: u32) -> u32 {
    return (b * p.tokens + t) * p.d4 + h * p.dh4 + min(c, p.dh4 - 1u);
}

// Index of (b, h, t) in [B, H, T].
fn row_idx(b: u32, t: u32, h: u32) -> u32 {
    return (b * p.heads + h) * p.tokens + t;
}

// Σ_c a[base + c]·x[c] over the 16 vec4s of a head row.
fn dot16(a: ptr<function, array<vec4<f32>, 64>>, base: u32, x: ptr<function, array<vec4<f32>, 16>>) -> f32 {
    var s = (*a)[base] * (*x)[0u];
    s = fma((*a)[base + 1u], (*x)[1u], s); s = fma((*a)[base + 2u], (*x)[2u], s); s = fma((*a)[base + 3u], (*x)[3u], s);
    s = fma((*a)[base + 4u], (*x)[4u], s); s = fma((*a)[base + 5u], (*x)[5u], s); s = fma((*a)[base + 6u], (*x)[6u], s);
    s = fma((*a)[base + 7u], (*x)[7u], s); s = fma((*a)[base + 8u], (*x)[8u], s); s = fma((*a)[base + 9u], (*x)[9u], s);
    s = fma((*a)[base + 10u], (*x)[10u], s); s = fma((*a)[base + 11u], (*x)[11u], s); s = fma((*a)[base + 12u], (*x)[12u], s);
    s = fma((*a)[base + 13u], (*x)[13u], s); s = fma((*a)[base + 14u], (*x)[14u], s); s = fma((*a)[base + 15u], (*x)[15u], s);
    return s.x + s.y + s.z + s.w;
}

// a[base + c] += w · x[c] over a head row.
fn axpy16(a: ptr<function, array<vec4<f32>, 64>>, base: u32, w: f32, x: ptr<function, array<vec4<f32>, 16>>) {
    let ww = vec4(w);
    (*a)[base] = fma(ww, (*x)[0u], (*a)[base]); (*a)[base + 1u] = fma(ww, (*x)[1u], (*a)[base + 1u]);
    (*a)[base + 2u] = fma(ww, (*x)[2u], (*a)[base + 2u]); (*a)[base + 3u] = fma(ww, (*x)[3u], (*a)[base + 3u]);
    (*a)[base + 4u] = fma(ww, (*x)[4u], (*a)[base + 4u]); (*a)[base + 5u] = fma(ww, (*x)[5u], (*a)[base + 5u]);
    (*a)[base + 6u] = fma(ww, (*x)[6u], (*a)[base + 6u]); (*a)[base + 7u] = fma(ww, (*x)[7u], (*a)[base + 7u]);
    (*a)[base + 8u] = fma(ww, (*x)[8u], (*a)[base + 8u]); (*a)[base + 9u] = fma(ww, (*x)[9u], (*a)[base + 9u]);
    (*a)[base + 10u] = fma(ww, (*x)[10u], (*a)[base + 10u]); (*a)[base + 11u] = fma(ww, (*x)[11u], (*a)[base + 11u]);
    (*a)[base + 12u] = fma(ww, (*x)[12u], (*a)[base + 12u]); (*a)[base + 13u] = fma(ww, (*x)[13u], (*a)[base + 13u]);
    (*a)[base + 14u] = fma(ww, (*x)[14u], (*a)[base + 14u]); (*a)[base + 15u] = fma(ww, (*x)[15u], (*a)[base + 15u]);
}

// row[4g + l] = lane l's v_g for g, l in 0..4: a head row of 16 vec4s, each lane of a group
// of 4 having loaded every fourth vec4 (see the header).
fn share_row(row: ptr<function, array<vec4<f32>, 16>>, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    (*row)[0u] = subgroupBroadcast(v0, 0u); (*row)[1u] = subgroupBroadcast(v0, 1u); (*row)[2u] = subgroupBroadcast(v0, 2u); (*row)[3u] = subgroupBroadcast(v0, 3u);
    (*row)[4u] = subgroupBroadcast(v1, 0u); (*row)[5u] = subgroupBroadcast(v1, 1u); (*row)[6u] = subgroupBroadcast(v1, 2u); (*row)[7u] = subgroupBroadcast(v1, 3u);
    (*row)[8u] = subgroupBroadcast(v2, 0u); (*row)[9u] = subgroupBroadcast(v2, 1u); (*row)[10u] = subgroupBroadcast(v2, 2u); (*row)[11u] = subgroupBroadcast(v2, 3u);
    (*row)[12u] = subgroupBroadcast(v3, 0u); (*row)[13u] = subgroupBroadcast(v3, 1u); (*row)[14u] = subgroupBroadcast(v3, 2u); (*row)[15u] = subgroupBroadcast(v3, 3u);
}

// ---- attention_forward ----

@group(0) @binding(0) var<storage, read> f_q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> f_k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> f_v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f_o: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> f_lse: array<f32>;

fn load_scaled(at: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(), p.scale * f_q[at], c < p.dh4);
}

// o_i = acc / l for the head row of query slot s (channels past dh are not stored).
fn store_o(b: u32, i: u32, h: u32, acc: ptr<function, array<vec4<f32>, 64>>, s: u32, l: f32) {
    let at = (b * p.tokens + i) * p.d4 + h * p.dh4;
    let inv = 1.0 / l;
    if (0u < p.dh4) { f_o[at + 0u] = inv * (*acc)[16u * s + 0u]; } if (1u < p.dh4) { f_o[at + 1u] = inv * (*acc)[16u * s + 1u]; }
    if (2u < p.dh4) { f_o[at + 2u] = inv * (*acc)[16u * s + 2u]; } if (3u < p.dh4) { f_o[at + 3u] = inv * (*acc)[16u * s + 3u]; }
    if (4u < p.dh4) { f_o[at + 4u] = inv * (*acc)[16u * s + 4u]; } if (5u < p.dh4) { f_o[at + 5u] = inv * (*acc)[16u * s + 5u]; }
    if (6u < p.dh4) { f_o[at + 6u] = inv * (*acc)[16u * s + 6u]; } if (7u < p.dh4) { f_o[at + 7u] = inv * (*acc)[16u * s + 7u]; }
    if (8u < p.dh4) { f_o[at + 8u] = inv * (*acc)[16u * s + 8u]; } if (9u < p.dh4) { f_o[at + 9u] = inv * (*acc)[16u * s + 9u]; }
    if (10u < p.dh4) { f_o[at + 10u] = inv * (*acc)[16u * s + 10u]; } if (11u < p.dh4) { f_o[at + 11u] = inv * (*acc)[16u * s + 11u]; }
    if (12u < p.dh4) { f_o[at + 12u] = inv * (*acc)[16u * s + 12u]; } if (13u < p.dh4) { f_o[at + 13u] = inv * (*acc)[16u * s + 13u]; }
    if (14u < p.dh4) { f_o[at + 14u] = inv * (*acc)[16u * s + 14u]; } if (15u < p.dh4) { f_o[at + 15u] = inv * (*acc)[16u * s + 15u]; }
}

@compute @workgroup_size(LANES)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    let s = sg % SHARE;
    let b = wid.z;
    let h = wid.y;
    let last = p.tokens - 1u;
    let i0 = min(wid.x * 32u + li, last);
    let i1 = min(wid.x * 32u + 8u + li, last);
    let i2 = min(wid.x * 32u + 16u + li, last);
    let i3 = min(wid.x * 32u + 24u + li, last);
    // qr[16s + c]: scale·q of query slot s; acc the same for Σ_j exp(s_ij − m) v_j.
    var qr: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    qr[0u] = load_scaled(q_idx(b, i0, h, 0u), 0u); qr[1u] = load_scaled(q_idx(b, i0, h, 1u), 1u); qr[2u] = load_scaled(q_idx(b, i0, h, 2u), 2u); qr[3u] = load_scaled(q_idx(b, i0, h, 3u), 3u);
    qr[4u] = load_scaled(q_idx(b, i0, h, 4u), 4u); qr[5u] = load_scaled(q_idx(b, i0, h, 5u), 5u); qr[6u] = load_scaled(q_idx(b, i0, h, 6u), 6u); qr[7u] = load_scaled(q_idx(b, i0, h, 7u), 7u);
    qr[8u] = load_scaled(q_idx(b, i0, h, 8u), 8u); qr[9u] = load_scaled(q_idx(b, i0, h, 9u), 9u); qr[10u] = load_scaled(q_idx(b, i0, h, 10u), 10u); qr[11u] = load_scaled(q_idx(b, i0, h, 11u), 11u);
    qr[12u] = load_scaled(q_idx(b, i0, h, 12u), 12u); qr[13u] = load_scaled(q_idx(b, i0, h, 13u), 13u); qr[14u] = load_scaled(q_idx(b, i0, h, 14u), 14u); qr[15u] = load_scaled(q_idx(b, i0, h, 15u), 15u);
    qr[16u] = load_scaled(q_idx(b, i1, h, 0u), 0u); qr[17u] = load_scaled(q_idx(b, i1, h, 1u), 1u); qr[18u] = load_scaled(q_idx(b, i1, h, 2u), 2u); qr[19u] = load_scaled(q_idx(b, i1, h, 3u), 3u);
    qr[20u] = load_scaled(q_idx(b, i1, h, 4u), 4u); qr[21u] = load_scaled(q_idx(b, i1, h, 5u), 5u); qr[22u] = load_scaled(q_idx(b, i1, h, 6u), 6u); qr[23u] = load_scaled(q_idx(b, i1, h, 7u), 7u);
    qr[24u] = load_scaled(q_idx(b, i1, h, 8u), 8u); qr[25u] = load_scaled(q_idx(b, i1, h, 9u), 9u); qr[26u] = load_scaled(q_idx(b, i1, h, 10u), 10u); qr[27u] = load_scaled(q_idx(b, i1, h, 11u), 11u);
    qr[28u] = load_scaled(q_idx(b, i1, h, 12u), 12u); qr[29u] = load_scaled(q_idx(b, i1, h, 13u), 13u); qr[30u] = load_scaled(q_idx(b, i1, h, 14u), 14u); qr[31u] = load_scaled(q_idx(b, i1, h, 15u), 15u);
    qr[32u] = load_scaled(q_idx(b, i2, h, 0u), 0u); qr[33u] = load_scaled(q_idx(b, i2, h, 1u), 1u); qr[34u] = load_scaled(q_idx(b, i2, h, 2u), 2u); qr[35u] = load_scaled(q_idx(b, i2, h, 3u), 3u);
    qr[36u] = load_scaled(q_idx(b, i2, h, 4u), 4u); qr[37u] = load_scaled(q_idx(b, i2, h, 5u), 5u); qr[38u] = load_scaled(q_idx(b, i2, h, 6u), 6u); qr[39u] = load_scaled(q_idx(b, i2, h, 7u), 7u);
    qr[40u] = load_scaled(q_idx(b, i2, h, 8u), 8u); qr[41u] = load_scaled(q_idx(b, i2, h, 9u), 9u); qr[42u] = load_scaled(q_idx(b, i2, h, 10u), 10u); qr[43u] = load_scaled(q_idx(b, i2, h, 11u), 11u);
    qr[44u] = load_scaled(q_idx(b, i2, h, 12u), 12u); qr[45u] = load_scaled(q_idx(b, i2, h, 13u), 13u); qr[46u] = load_scaled(q_idx(b, i2, h, 14u), 14u); qr[47u] = load_scaled(q_idx(b, i2, h, 15u), 15u);
    qr[48u] = load_scaled(q_idx(b, i3, h, 0u), 0u); qr[49u] = load_scaled(q_idx(b, i3, h, 1u), 1u); qr[50u] = load_scaled(q_idx(b, i3, h, 2u), 2u); qr[51u] = load_scaled(q_idx(b, i3, h, 3u), 3u);
    qr[52u] = load_scaled(q_idx(b, i3, h, 4u), 4u); qr[53u] = load_scaled(q_idx(b, i3, h, 5u), 5u); qr[54u] = load_scaled(q_idx(b, i3, h, 6u), 6u); qr[55u] = load_scaled(q_idx(b, i3, h, 7u), 7u);
    qr[56u] = load_scaled(q_idx(b, i3, h, 8u), 8u); qr[57u] = load_scaled(q_idx(b, i3, h, 9u), 9u); qr[58u] = load_scaled(q_idx(b, i3, h, 10u), 10u); qr[59u] = load_scaled(q_idx(b, i3, h, 11u), 11u);
    qr[60u] = load_scaled(q_idx(b, i3, h, 12u), 12u); qr[61u] = load_scaled(q_idx(b, i3, h, 13u), 13u); qr[62u] = load_scaled(q_idx(b, i3, h, 14u), 14u); qr[63u] = load_scaled(q_idx(b, i3, h, 15u), 15u);
    var m = vec4<f32>(-3.0e38);
    var l = vec4<f32>();
    var kr: array<vec4<f32>, 16>;
    var vr: array<vec4<f32>, 16>;
    let cl = p.dh4 - 1u;
    for (var j = 0u; j < p.tokens; j++) {
        let at = (b * p.tokens + j) * p.d4 + h * p.dh4;
        let kr_0 = f_k[at + min(s + 0u, cl)]; let kr_1 = f_k[at + min(s + 4u, cl)]; let kr_2 = f_k[at + min(s + 8u, cl)]; let kr_3 = f_k[at + min(s + 12u, cl)];
        let vr_0 = f_v[at + min(s + 0u, cl)]; let vr_1 = f_v[at + min(s + 4u, cl)]; let vr_2 = f_v[at + min(s + 8u, cl)]; let vr_3 = f_v[at + min(s + 12u, cl)];
        share_row(&kr, kr_0, kr_1, kr_2, kr_3);
        share_row(&vr, vr_0, vr_1, vr_2, vr_3);
        let sc = vec4<f32>(dot16(&qr, 0u, &kr), dot16(&qr, 16u, &kr), dot16(&qr, 32u, &kr), dot16(&qr, 48u, &kr));
        let m_new = max(m, sc);
        let corr = exp(m - m_new);
        let pj = exp(sc - m_new);
        l = fma(l, corr, pj);
        m = m_new;
        acc[0u] = fma(vec4(pj[0u]), vr[0u], corr[0u] * acc[0u]); acc[1u] = fma(vec4(pj[0u]), vr[1u], corr[0u] * acc[1u]);
        acc[2u] = fma(vec4(pj[0u]), vr[2u], corr[0u] * acc[2u]); acc[3u] = fma(vec4(pj[0u]), vr[3u], corr[0u] * acc[3u]);
        acc[4u] = fma(vec4(pj[0u]), vr[4u], corr[0u] * acc[4u]); acc[5u] = fma(vec4(pj[0u]), vr[5u], corr[0u] * acc[5u]);
        acc[6u] = fma(vec4(pj[0u]), vr[6u], corr[0u] * acc[6u]); acc[7u] = fma(vec4(pj[0u]), vr[7u], corr[0u] * acc[7u]);
        acc[8u] = fma(vec4(pj[0u]), vr[8u], corr[0u] * acc[8u]); acc[9u] = fma(vec4(pj[0u]), vr[9u], corr[0u] * acc[9u]);
        acc[10u] = fma(vec4(pj[0u]), vr[10u], corr[0u] * acc[10u]); acc[11u] = fma(vec4(pj[0u]), vr[11u], corr[0u] * acc[11u]);
        acc[12u] = fma(vec4(pj[0u]), vr[12u], corr[0u] * acc[12u]); acc[13u] = fma(vec4(pj[0u]), vr[13u], corr[0u] * acc[13u]);
        acc[14u] = fma(vec4(pj[0u]), vr[14u], corr[0u] * acc[14u]); acc[15u] = fma(vec4(pj[0u]), vr[15u], corr[0u] * acc[15u]);
        acc[16u] = fma(vec4(pj[1u]), vr[0u], corr[1u] * acc[16u]); acc[17u] = fma(vec4(pj[1u]), vr[1u], corr[1u] * acc[17u]);
        acc[18u] = fma(vec4(pj[1u]), vr[2u], corr[1u] * acc[18u]); acc[19u] = fma(vec4(pj[1u]), vr[3u], corr[1u] * acc[19u]);
        acc[20u] = fma(vec4(pj[1u]), vr[4u], corr[1u] * acc[20u]); acc[21u] = fma(vec4(pj[1u]), vr[5u], corr[1u] * acc[21u]);
        acc[22u] = fma(vec4(pj[1u]), vr[6u], corr[1u] * acc[22u]); acc[23u] = fma(vec4(pj[1u]), vr[7u], corr[1u] * acc[23u]);
        acc[24u] = fma(vec4(pj[1u]), vr[8u], corr[1u] * acc[24u]); acc[25u] = fma(vec4(pj[1u]), vr[9u], corr[1u] * acc[25u]);
        acc[26u] = fma(vec4(pj[1u]), vr[10u], corr[1u] * acc[26u]); acc[27u] = fma(vec4(pj[1u]), vr[11u], corr[1u] * acc[27u]);
        acc[28u] = fma(vec4(pj[1u]), vr[12u], corr[1u] * acc[28u]); acc[29u] = fma(vec4(pj[1u]), vr[13u], corr[1u] * acc[29u]);
        acc[30u] = fma(vec4(pj[1u]), vr[14u], corr[1u] * acc[30u]); acc[31u] = fma(vec4(pj[1u]), vr[15u], corr[1u] * acc[31u]);
        acc[32u] = fma(vec4(pj[2u]), vr[0u], corr[2u] * acc[32u]); acc[33u] = fma(vec4(pj[2u]), vr[1u], corr[2u] * acc[33u]);
        acc[34u] = fma(vec4(pj[2u]), vr[2u], corr[2u] * acc[34u]); acc[35u] = fma(vec4(pj[2u]), vr[3u], corr[2u] * acc[35u]);
        acc[36u] = fma(vec4(pj[2u]), vr[4u], corr[2u] * acc[36u]); acc[37u] = fma(vec4(pj[2u]), vr[5u], corr[2u] * acc[37u]);
        acc[38u] = fma(vec4(pj[2u]), vr[6u], corr[2u] * acc[38u]); acc[39u] = fma(vec4(pj[2u]), vr[7u], corr[2u] * acc[39u]);
        acc[40u] = fma(vec4(pj[2u]), vr[8u], corr[2u] * acc[40u]); acc[41u] = fma(vec4(pj[2u]), vr[9u], corr[2u] * acc[41u]);
        acc[42u] = fma(vec4(pj[2u]), vr[10u], corr[2u] * acc[42u]); acc[43u] = fma(vec4(pj[2u]), vr[11u], corr[2u] * acc[43u]);
        acc[44u] = fma(vec4(pj[2u]), vr[12u], corr[2u] * acc[44u]); acc[45u] = fma(vec4(pj[2u]), vr[13u], corr[2u] * acc[45u]);
        acc[46u] = fma(vec4(pj[2u]), vr[14u], corr[2u] * acc[46u]); acc[47u] = fma(vec4(pj[2u]), vr[15u], corr[2u] * acc[47u]);
        acc[48u] = fma(vec4(pj[3u]), vr[0u], corr[3u] * acc[48u]); acc[49u] = fma(vec4(pj[3u]), vr[1u], corr[3u] * acc[49u]);
        acc[50u] = fma(vec4(pj[3u]), vr[2u], corr[3u] * acc[50u]); acc[51u] = fma(vec4(pj[3u]), vr[3u], corr[3u] * acc[51u]);
        acc[52u] = fma(vec4(pj[3u]), vr[4u], corr[3u] * acc[52u]); acc[53u] = fma(vec4(pj[3u]), vr[5u], corr[3u] * acc[53u]);
        acc[54u] = fma(vec4(pj[3u]), vr[6u], corr[3u] * acc[54u]); acc[55u] = fma(vec4(pj[3u]), vr[7u], corr[3u] * acc[55u]);
        acc[56u] = fma(vec4(pj[3u]), vr[8u], corr[3u] * acc[56u]); acc[57u] = fma(vec4(pj[3u]), vr[9u], corr[3u] * acc[57u]);
        acc[58u] = fma(vec4(pj[3u]), vr[10u], corr[3u] * acc[58u]); acc[59u] = fma(vec4(pj[3u]), vr[11u], corr[3u] * acc[59u]);
        acc[60u] = fma(vec4(pj[3u]), vr[12u], corr[3u] * acc[60u]); acc[61u] = fma(vec4(pj[3u]), vr[13u], corr[3u] * acc[61u]);
        acc[62u] = fma(vec4(pj[3u]), vr[14u], corr[3u] * acc[62u]); acc[63u] = fma(vec4(pj[3u]), vr[15u], corr[3u] * acc[63u]);
    }
    store_o(b, i0, h, &acc, 0u, l[0u]);
    store_o(b, i1, h, &acc, 1u, l[1u]);
    store_o(b, i2, h, &acc, 2u, l[2u]);
    store_o(b, i3, h, &acc, 3u, l[3u]);
    f_lse[row_idx(b, i0, h)] = m.x + log(l.x);
    f_lse[row_idx(b, i1, h)] = m.y + log(l.y);
    f_lse[row_idx(b, i2, h)] = m.z + log(l.z);
    f_lse[row_idx(b, i3, h)] = m.w + log(l.w);
}


// ---- attention_backward_q: ∂q and D ----

@group(0) @binding(0) var<storage, read> bq_q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> bq_k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bq_v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bq_o: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bq_do: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bq_lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> bq_dq: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> bq_dsum: array<f32>;

fn bq_scaled(at: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(), p.scale * bq_q[at], c < p.dh4);
}

fn bdo_masked(at: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(), bq_do[at], c < p.dh4);
}

// D = Σ_c ∂o_c o_c of query i (∂o already in dor[16s ..]).
fn dsum(b: u32, i: u32, h: u32, dor: ptr<function, array<vec4<f32>, 64>>, s: u32) -> f32 {
    var o: array<vec4<f32>, 16>;
    o[0u] = bq_o[q_idx(b, i, h, 0u)]; o[1u] = bq_o[q_idx(b, i, h, 1u)]; o[2u] = bq_o[q_idx(b, i, h, 2u)]; o[3u] = bq_o[q_idx(b, i, h, 3u)];
    o[4u] = bq_o[q_idx(b, i, h, 4u)]; o[5u] = bq_o[q_idx(b, i, h, 5u)]; o[6u] = bq_o[q_idx(b, i, h, 6u)]; o[7u] = bq_o[q_idx(b, i, h, 7u)];
    o[8u] = bq_o[q_idx(b, i, h, 8u)]; o[9u] = bq_o[q_idx(b, i, h, 9u)]; o[10u] = bq_o[q_idx(b, i, h, 10u)]; o[11u] = bq_o[q_idx(b, i, h, 11u)];
    o[12u] = bq_o[q_idx(b, i, h, 12u)]; o[13u] = bq_o[q_idx(b, i, h, 13u)]; o[14u] = bq_o[q_idx(b, i, h, 14u)]; o[15u] = bq_o[q_idx(b, i, h, 15u)];
    return dot16(dor, 16u * s, &o);
}

// ∂q = scale·acc for the head row of query slot s.
fn store_dq(b: u32, i: u32, h: u32, acc: ptr<function, array<vec4<f32>, 64>>, s: u32) {
    let at = (b * p.tokens + i) * p.d4 + h * p.dh4;
    if (0u < p.dh4) { bq_dq[at + 0u] = p.scale * (*acc)[16u * s + 0u]; } if (1u < p.dh4) { bq_dq[at + 1u] = p.scale * (*acc)[16u * s + 1u]; }
    if (2u < p.dh4) { bq_dq[at + 2u] = p.scale * (*acc)[16u * s + 2u]; } if (3u < p.dh4) { bq_dq[at + 3u] = p.scale * (*acc)[16u * s + 3u]; }
    if (4u < p.dh4) { bq_dq[at + 4u] = p.scale * (*acc)[16u * s + 4u]; } if (5u < p.dh4) { bq_dq[at + 5u] = p.scale * (*acc)[16u * s + 5u]; }
    if (6u < p.dh4) { bq_dq[at + 6u] = p.scale * (*acc)[16u * s + 6u]; } if (7u < p.dh4) { bq_dq[at + 7u] = p.scale * (*acc)[16u * s + 7u]; }
    if (8u < p.dh4) { bq_dq[at + 8u] = p.scale * (*acc)[16u * s + 8u]; } if (9u < p.dh4) { bq_dq[at + 9u] = p.scale * (*acc)[16u * s + 9u]; }
    if (10u < p.dh4) { bq_dq[at + 10u] = p.scale * (*acc)[16u * s + 10u]; } if (11u < p.dh4) { bq_dq[at + 11u] = p.scale * (*acc)[16u * s + 11u]; }
    if (12u < p.dh4) { bq_dq[at + 12u] = p.scale * (*acc)[16u * s + 12u]; } if (13u < p.dh4) { bq_dq[at + 13u] = p.scale * (*acc)[16u * s + 13u]; }
    if (14u < p.dh4) { bq_dq[at + 14u] = p.scale * (*acc)[16u * s + 14u]; } if (15u < p.dh4) { bq_dq[at + 15u] = p.scale * (*acc)[16u * s + 15u]; }
}

@compute @workgroup_size(LANES)
fn attention_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    let s = sg % SHARE;
    let b = wid.z;
    let h = wid.y;
    let last = p.tokens - 1u;
    let i0 = min(wid.x * 32u + li, last);
    let i1 = min(wid.x * 32u + 8u + li, last);
    let i2 = min(wid.x * 32u + 16u + li, last);
    let i3 = min(wid.x * 32u + 24u + li, last);
    var qr: array<vec4<f32>, 64>;
    var dor: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    qr[0u] = bq_scaled(q_idx(b, i0, h, 0u), 0u); dor[0u] = bdo_masked(q_idx(b, i0, h, 0u), 0u); qr[1u] = bq_scaled(q_idx(b, i0, h, 1u), 1u); dor[1u] = bdo_masked(q_idx(b, i0, h, 1u), 1u);
    qr[2u] = bq_scaled(q_idx(b, i0, h, 2u), 2u); dor[2u] = bdo_masked(q_idx(b, i0, h, 2u), 2u); qr[3u] = bq_scaled(q_idx(b, i0, h, 3u), 3u); dor[3u] = bdo_masked(q_idx(b, i0, h, 3u), 3u);
    qr[4u] = bq_scaled(q_idx(b, i0, h, 4u), 4u); dor[4u] = bdo_masked(q_idx(b, i0, h, 4u), 4u); qr[5u] = bq_scaled(q_idx(b, i0, h, 5u), 5u); dor[5u] = bdo_masked(q_idx(b, i0, h, 5u), 5u);
    qr[6u] = bq_scaled(q_idx(b, i0, h, 6u), 6u); dor[6u] = bdo_masked(q_idx(b, i0, h, 6u), 6u); qr[7u] = bq_scaled(q_idx(b, i0, h, 7u), 7u); dor[7u] = bdo_masked(q_idx(b, i0, h, 7u), 7u);
    qr[8u] = bq_scaled(q_idx(b, i0, h, 8u), 8u); dor[8u] = bdo_masked(q_idx(b, i0, h, 8u), 8u); qr[9u] = bq_scaled(q_idx(b, i0, h, 9u), 9u); dor[9u] = bdo_masked(q_idx(b, i0, h, 9u), 9u);
    qr[10u] = bq_scaled(q_idx(b, i0, h, 10u), 10u); dor[10u] = bdo_masked(q_idx(b, i0, h, 10u), 10u); qr[11u] = bq_scaled(q_idx(b, i0, h, 11u), 11u); dor[11u] = bdo_masked(q_idx(b, i0, h, 11u), 11u);
    qr[12u] = bq_scaled(q_idx(b, i0, h, 12u), 12u); dor[12u] = bdo_masked(q_idx(b, i0, h, 12u), 12u); qr[13u] = bq_scaled(q_idx(b, i0, h, 13u), 13u); dor[13u] = bdo_masked(q_idx(b, i0, h, 13u), 13u);
    qr[14u] = bq_scaled(q_idx(b, i0, h, 14u), 14u); dor[14u] = bdo_masked(q_idx(b, i0, h, 14u), 14u); qr[15u] = bq_scaled(q_idx(b, i0, h, 15u), 15u); dor[15u] = bdo_masked(q_idx(b, i0, h, 15u), 15u);
    qr[16u] = bq_scaled(q_idx(b, i1, h, 0u), 0u); dor[16u] = bdo_masked(q_idx(b, i1, h, 0u), 0u); qr[17u] = bq_scaled(q_idx(b, i1, h, 1u), 1u); dor[17u] = bdo_masked(q_idx(b, i1, h, 1u), 1u);
    qr[18u] = bq_scaled(q_idx(b, i1, h, 2u), 2u); dor[18u] = bdo_masked(q_idx(b, i1, h, 2u), 2u); qr[19u] = bq_scaled(q_idx(b, i1, h, 3u), 3u); dor[19u] = bdo_masked(q_idx(b, i1, h, 3u), 3u);
    qr[20u] = bq_scaled(q_idx(b, i1, h, 4u), 4u); dor[20u] = bdo_masked(q_idx(b, i1, h, 4u), 4u); qr[21u] = bq_scaled(q_idx(b, i1, h, 5u), 5u); dor[21u] = bdo_masked(q_idx(b, i1, h, 5u), 5u);
    qr[22u] = bq_scaled(q_idx(b, i1, h, 6u), 6u); dor[22u] = bdo_masked(q_idx(b, i1, h, 6u), 6u); qr[23u] = bq_scaled(q_idx(b, i1, h, 7u), 7u); dor[23u] = bdo_masked(q_idx(b, i1, h, 7u), 7u);
    qr[24u] = bq_scaled(q_idx(b, i1, h, 8u), 8u); dor[24u] = bdo_masked(q_idx(b, i1, h, 8u), 8u); qr[25u] = bq_scaled(q_idx(b, i1, h, 9u), 9u); dor[25u] = bdo_masked(q_idx(b, i1, h, 9u), 9u);
    qr[26u] = bq_scaled(q_idx(b, i1, h, 10u), 10u); dor[26u] = bdo_masked(q_idx(b, i1, h, 10u), 10u); qr[27u] = bq_scaled(q_idx(b, i1, h, 11u), 11u); dor[27u] = bdo_masked(q_idx(b, i1, h, 11u), 11u);
    qr[28u] = bq_scaled(q_idx(b, i1, h, 12u), 12u); dor[28u] = bdo_masked(q_idx(b, i1, h, 12u), 12u); qr[29u] = bq_scaled(q_idx(b, i1, h, 13u), 13u); dor[29u] = bdo_masked(q_idx(b, i1, h, 13u), 13u);
    qr[30u] = bq_scaled(q_idx(b, i1, h, 14u), 14u); dor[30u] = bdo_masked(q_idx(b, i1, h, 14u), 14u); qr[31u] = bq_scaled(q_idx(b, i1, h, 15u), 15u); dor[31u] = bdo_masked(q_idx(b, i1, h, 15u), 15u);
    qr[32u] = bq_scaled(q_idx(b, i2, h, 0u), 0u); dor[32u] = bdo_masked(q_idx(b, i2, h, 0u), 0u); qr[33u] = bq_scaled(q_idx(b, i2, h, 1u), 1u); dor[33u] = bdo_masked(q_idx(b, i2, h, 1u), 1u);
    qr[34u] = bq_scaled(q_idx(b, i2, h, 2u), 2u); dor[34u] = bdo_masked(q_idx(b, i2, h, 2u), 2u); qr[35u] = bq_scaled(q_idx(b, i2, h, 3u), 3u); dor[35u] = bdo_masked(q_idx(b, i2, h, 3u), 3u);
    qr[36u] = bq_scaled(q_idx(b, i2, h, 4u), 4u); dor[36u] = bdo_masked(q_idx(b, i2, h, 4u), 4u); qr[37u] = bq_scaled(q_idx(b, i2, h, 5u), 5u); dor[37u] = bdo_masked(q_idx(b, i2, h, 5u), 5u);
    qr[38u] = bq_scaled(q_idx(b, i2, h, 6u), 6u); dor[38u] = bdo_masked(q_idx(b, i2, h, 6u), 6u); qr[39u] = bq_scaled(q_idx(b, i2, h, 7u), 7u); dor[39u] = bdo_masked(q_idx(b, i2, h, 7u), 7u);
    qr[40u] = bq_scaled(q_idx(b, i2, h, 8u), 8u); dor[40u] = bdo_masked(q_idx(b, i2, h, 8u), 8u); qr[41u] = bq_scaled(q_idx(b, i2, h, 9u), 9u); dor[41u] = bdo_masked(q_idx(b, i2, h, 9u), 9u);
    qr[42u] = bq_scaled(q_idx(b, i2, h, 10u), 10u); dor[42u] = bdo_masked(q_idx(b, i2, h, 10u), 10u); qr[43u] = bq_scaled(q_idx(b, i2, h, 11u), 11u); dor[43u] = bdo_masked(q_idx(b, i2, h, 11u), 11u);
    qr[44u] = bq_scaled(q_idx(b, i2, h, 12u), 12u); dor[44u] = bdo_masked(q_idx(b, i2, h, 12u), 12u); qr[45u] = bq_scaled(q_idx(b, i2, h, 13u), 13u); dor[45u] = bdo_masked(q_idx(b, i2, h, 13u), 13u);
    qr[46u] = bq_scaled(q_idx(b, i2, h, 14u), 14u); dor[46u] = bdo_masked(q_idx(b, i2, h, 14u), 14u); qr[47u] = bq_scaled(q_idx(b, i2, h, 15u), 15u); dor[47u] = bdo_masked(q_idx(b, i2, h, 15u), 15u);
    qr[48u] = bq_scaled(q_idx(b, i3, h, 0u), 0u); dor[48u] = bdo_masked(q_idx(b, i3, h, 0u), 0u); qr[49u] = bq_scaled(q_idx(b, i3, h, 1u), 1u); dor[49u] = bdo_masked(q_idx(b, i3, h, 1u), 1u);
    qr[50u] = bq_scaled(q_idx(b, i3, h, 2u), 2u); dor[50u] = bdo_masked(q_idx(b, i3, h, 2u), 2u); qr[51u] = bq_scaled(q_idx(b, i3, h, 3u), 3u); dor[51u] = bdo_masked(q_idx(b, i3, h, 3u), 3u);
    qr[52u] = bq_scaled(q_idx(b, i3, h, 4u), 4u); dor[52u] = bdo_masked(q_idx(b, i3, h, 4u), 4u); qr[53u] = bq_scaled(q_idx(b, i3, h, 5u), 5u); dor[53u] = bdo_masked(q_idx(b, i3, h, 5u), 5u);
    qr[54u] = bq_scaled(q_idx(b, i3, h, 6u), 6u); dor[54u] = bdo_masked(q_idx(b, i3, h, 6u), 6u); qr[55u] = bq_scaled(q_idx(b, i3, h, 7u), 7u); dor[55u] = bdo_masked(q_idx(b, i3, h, 7u), 7u);
    qr[56u] = bq_scaled(q_idx(b, i3, h, 8u), 8u); dor[56u] = bdo_masked(q_idx(b, i3, h, 8u), 8u); qr[57u] = bq_scaled(q_idx(b, i3, h, 9u), 9u); dor[57u] = bdo_masked(q_idx(b, i3, h, 9u), 9u);
    qr[58u] = bq_scaled(q_idx(b, i3, h, 10u), 10u); dor[58u] = bdo_masked(q_idx(b, i3, h, 10u), 10u); qr[59u] = bq_scaled(q_idx(b, i3, h, 11u), 11u); dor[59u] = bdo_masked(q_idx(b, i3, h, 11u), 11u);
    qr[60u] = bq_scaled(q_idx(b, i3, h, 12u), 12u); dor[60u] = bdo_masked(q_idx(b, i3, h, 12u), 12u); qr[61u] = bq_scaled(q_idx(b, i3, h, 13u), 13u); dor[61u] = bdo_masked(q_idx(b, i3, h, 13u), 13u);
    qr[62u] = bq_scaled(q_idx(b, i3, h, 14u), 14u); dor[62u] = bdo_masked(q_idx(b, i3, h, 14u), 14u); qr[63u] = bq_scaled(q_idx(b, i3, h, 15u), 15u); dor[63u] = bdo_masked(q_idx(b, i3, h, 15u), 15u);
    let lse = vec4<f32>(bq_lse[row_idx(b, i0, h)], bq_lse[row_idx(b, i1, h)], bq_lse[row_idx(b, i2, h)], bq_lse[row_idx(b, i3, h)]);
    let dd = vec4<f32>(dsum(b, i0, h, &dor, 0u), dsum(b, i1, h, &dor, 1u), dsum(b, i2, h, &dor, 2u), dsum(b, i3, h, &dor, 3u));
    var kr: array<vec4<f32>, 16>;
    var vr: array<vec4<f32>, 16>;
    let cl = p.dh4 - 1u;
    for (var j = 0u; j < p.tokens; j++) {
        let at = (b * p.tokens + j) * p.d4 + h * p.dh4;
        let kr_0 = bq_k[at + min(s + 0u, cl)]; let kr_1 = bq_k[at + min(s + 4u, cl)]; let kr_2 = bq_k[at + min(s + 8u, cl)]; let kr_3 = bq_k[at + min(s + 12u, cl)];
        let vr_0 = bq_v[at + min(s + 0u, cl)]; let vr_1 = bq_v[at + min(s + 4u, cl)]; let vr_2 = bq_v[at + min(s + 8u, cl)]; let vr_3 = bq_v[at + min(s + 12u, cl)];
        share_row(&kr, kr_0, kr_1, kr_2, kr_3);
        share_row(&vr, vr_0, vr_1, vr_2, vr_3);
        let sc = vec4<f32>(dot16(&qr, 0u, &kr), dot16(&qr, 16u, &kr), dot16(&qr, 32u, &kr), dot16(&qr, 48u, &kr));
        let pj = exp(sc - lse);
        let dp = vec4<f32>(dot16(&dor, 0u, &vr), dot16(&dor, 16u, &vr), dot16(&dor, 32u, &vr), dot16(&dor, 48u, &vr));
        let ds = pj * (dp - dd);
        axpy16(&acc, 0u, ds.x, &kr); axpy16(&acc, 16u, ds.y, &kr); axpy16(&acc, 32u, ds.z, &kr); axpy16(&acc, 48u, ds.w, &kr);
    }
    store_dq(b, i0, h, &acc, 0u); store_dq(b, i1, h, &acc, 1u); store_dq(b, i2, h, &acc, 2u); store_dq(b, i3, h, &acc, 3u);
    bq_dsum[row_idx(b, i0, h)] = dd.x;
    bq_dsum[row_idx(b, i1, h)] = dd.y;
    bq_dsum[row_idx(b, i2, h)] = dd.z;
    bq_dsum[row_idx(b, i3, h)] = dd.w;
}

// ---- attention_backward_kv: ∂k and ∂v ----

@group(0) @binding(0) var<storage, read> bk_q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> bk_k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bk_v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bk_do: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bk_lse: array<f32>;
@group(0) @binding(5) var<storage, read> bk_dsum: array<f32>;
@group(0) @binding(6) var<storage, read_write> bk_dk: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> bk_dv: array<vec4<f32>>;

fn bk_masked_k(at: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(), bk_k[at], c < p.dh4);
}

fn bk_masked_v(at: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(), bk_v[at], c < p.dh4);
}

// ∂k, ∂v of key slot s (rows 16s .. of dk, dv).
fn store_dkv(b: u32, j: u32, h: u32, dk: ptr<function, array<vec4<f32>, 64>>, dv: ptr<function, array<vec4<f32>, 64>>, s: u32) {
    let at = (b * p.tokens + j) * p.d4 + h * p.dh4;
    if (0u < p.dh4) { bk_dk[at + 0u] = (*dk)[16u * s + 0u]; bk_dv[at + 0u] = (*dv)[16u * s + 0u]; }
    if (1u < p.dh4) { bk_dk[at + 1u] = (*dk)[16u * s + 1u]; bk_dv[at + 1u] = (*dv)[16u * s + 1u]; }
    if (2u < p.dh4) { bk_dk[at + 2u] = (*dk)[16u * s + 2u]; bk_dv[at + 2u] = (*dv)[16u * s + 2u]; }
    if (3u < p.dh4) { bk_dk[at + 3u] = (*dk)[16u * s + 3u]; bk_dv[at + 3u] = (*dv)[16u * s + 3u]; }
    if (4u < p.dh4) { bk_dk[at + 4u] = (*dk)[16u * s + 4u]; bk_dv[at + 4u] = (*dv)[16u * s + 4u]; }
    if (5u < p.dh4) { bk_dk[at + 5u] = (*dk)[16u * s + 5u]; bk_dv[at + 5u] = (*dv)[16u * s + 5u]; }
    if (6u < p.dh4) { bk_dk[at + 6u] = (*dk)[16u * s + 6u]; bk_dv[at + 6u] = (*dv)[16u * s + 6u]; }
    if (7u < p.dh4) { bk_dk[at + 7u] = (*dk)[16u * s + 7u]; bk_dv[at + 7u] = (*dv)[16u * s + 7u]; }
    if (8u < p.dh4) { bk_dk[at + 8u] = (*dk)[16u * s + 8u]; bk_dv[at + 8u] = (*dv)[16u * s + 8u]; }
    if (9u < p.dh4) { bk_dk[at + 9u] = (*dk)[16u * s + 9u]; bk_dv[at + 9u] = (*dv)[16u * s + 9u]; }
    if (10u < p.dh4) { bk_dk[at + 10u] = (*dk)[16u * s + 10u]; bk_dv[at + 10u] = (*dv)[16u * s + 10u]; }
    if (11u < p.dh4) { bk_dk[at + 11u] = (*dk)[16u * s + 11u]; bk_dv[at + 11u] = (*dv)[16u * s + 11u]; }
    if (12u < p.dh4) { bk_dk[at + 12u] = (*dk)[16u * s + 12u]; bk_dv[at + 12u] = (*dv)[16u * s + 12u]; }
    if (13u < p.dh4) { bk_dk[at + 13u] = (*dk)[16u * s + 13u]; bk_dv[at + 13u] = (*dv)[16u * s + 13u]; }
    if (14u < p.dh4) { bk_dk[at + 14u] = (*dk)[16u * s + 14u]; bk_dv[at + 14u] = (*dv)[16u * s + 14u]; }
    if (15u < p.dh4) { bk_dk[at + 15u] = (*dk)[16u * s + 15u]; bk_dv[at + 15u] = (*dv)[16u * s + 15u]; }
}

@compute @workgroup_size(LANES)
fn attention_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sg: u32) {
    let s = sg % SHARE;
    let b = wid.z;
    let h = wid.y;
    let last = p.tokens - 1u;
    let j0 = min(wid.x * 32u + li, last);
    let j1 = min(wid.x * 32u + 8u + li, last);
    let j2 = min(wid.x * 32u + 16u + li, last);
    let j3 = min(wid.x * 32u + 24u + li, last);
    // kr, vr: the four key slots' rows at 16s; dk, dv likewise.
    var kr: array<vec4<f32>, 64>;
    var vr: array<vec4<f32>, 64>;
    var dk: array<vec4<f32>, 64>;
    var dv: array<vec4<f32>, 64>;
    kr[0u] = bk_masked_k(q_idx(b, j0, h, 0u), 0u); vr[0u] = bk_masked_v(q_idx(b, j0, h, 0u), 0u); kr[1u] = bk_masked_k(q_idx(b, j0, h, 1u), 1u); vr[1u] = bk_masked_v(q_idx(b, j0, h, 1u), 1u);
    kr[2u] = bk_masked_k(q_idx(b, j0, h, 2u), 2u); vr[2u] = bk_masked_v(q_idx(b, j0, h, 2u), 2u); kr[3u] = bk_masked_k(q_idx(b, j0, h, 3u), 3u); vr[3u] = bk_masked_v(q_idx(b, j0, h, 3u), 3u);
    kr[4u] = bk_masked_k(q_idx(b, j0, h, 4u), 4u); vr[4u] = bk_masked_v(q_idx(b, j0, h, 4u), 4u); kr[5u] = bk_masked_k(q_idx(b, j0, h, 5u), 5u); vr[5u] = bk_masked_v(q_idx(b, j0, h, 5u), 5u);
    kr[6u] = bk_masked_k(q_idx(b, j0, h, 6u), 6u); vr[6u] = bk_masked_v(q_idx(b, j0, h, 6u), 6u); kr[7u] = bk_masked_k(q_idx(b, j0, h, 7u), 7u); vr[7u] = bk_masked_v(q_idx(b, j0, h, 7u), 7u);
    kr[8u] = bk_masked_k(q_idx(b, j0, h, 8u), 8u); vr[8u] = bk_masked_v(q_idx(b, j0, h, 8u), 8u); kr[9u] = bk_masked_k(q_idx(b, j0, h, 9u), 9u); vr[9u] = bk_masked_v(q_idx(b, j0, h, 9u), 9u);
    kr[10u] = bk_masked_k(q_idx(b, j0, h, 10u), 10u); vr[10u] = bk_masked_v(q_idx(b, j0, h, 10u), 10u); kr[11u] = bk_masked_k(q_idx(b, j0, h, 11u), 11u); vr[11u] = bk_masked_v(q_idx(b, j0, h, 11u), 11u);
    kr[12u] = bk_masked_k(q_idx(b, j0, h, 12u), 12u); vr[12u] = bk_masked_v(q_idx(b, j0, h, 12u), 12u); kr[13u] = bk_masked_k(q_idx(b, j0, h, 13u), 13u); vr[13u] = bk_masked_v(q_idx(b, j0, h, 13u), 13u);
    kr[14u] = bk_masked_k(q_idx(b, j0, h, 14u), 14u); vr[14u] = bk_masked_v(q_idx(b, j0, h, 14u), 14u); kr[15u] = bk_masked_k(q_idx(b, j0, h, 15u), 15u); vr[15u] = bk_masked_v(q_idx(b, j0, h, 15u), 15u);
    kr[16u] = bk_masked_k(q_idx(b, j1, h, 0u), 0u); vr[16u] = bk_masked_v(q_idx(b, j1, h, 0u), 0u); kr[17u] = bk_masked_k(q_idx(b, j1, h, 1u), 1u); vr[17u] = bk_masked_v(q_idx(b, j1, h, 1u), 1u);
    kr[18u] = bk_masked_k(q_idx(b, j1, h, 2u), 2u); vr[18u] = bk_masked_v(q_idx(b, j1, h, 2u), 2u); kr[19u] = bk_masked_k(q_idx(b, j1, h, 3u), 3u); vr[19u] = bk_masked_v(q_idx(b, j1, h, 3u), 3u);
    kr[20u] = bk_masked_k(q_idx(b, j1, h, 4u), 4u); vr[20u] = bk_masked_v(q_idx(b, j1, h, 4u), 4u); kr[21u] = bk_masked_k(q_idx(b, j1, h, 5u), 5u); vr[21u] = bk_masked_v(q_idx(b, j1, h, 5u), 5u);
    kr[22u] = bk_masked_k(q_idx(b, j1, h, 6u), 6u); vr[22u] = bk_masked_v(q_idx(b, j1, h, 6u), 6u); kr[23u] = bk_masked_k(q_idx(b, j1, h, 7u), 7u); vr[23u] = bk_masked_v(q_idx(b, j1, h, 7u), 7u);
    kr[24u] = bk_masked_k(q_idx(b, j1, h, 8u), 8u); vr[24u] = bk_masked_v(q_idx(b, j1, h, 8u), 8u); kr[25u] = bk_masked_k(q_idx(b, j1, h, 9u), 9u); vr[25u] = bk_masked_v(q_idx(b, j1, h, 9u), 9u);
    kr[26u] = bk_masked_k(q_idx(b, j1, h, 10u), 10u); vr[26u] = bk_masked_v(q_idx(b, j1, h, 10u), 10u); kr[27u] = bk_masked_k(q_idx(b, j1, h, 11u), 11u); vr[27u] = bk_masked_v(q_idx(b, j1, h, 11u), 11u);
    kr[28u] = bk_masked_k(q_idx(b, j1, h, 12u), 12u); vr[28u] = bk_masked_v(q_idx(b, j1, h, 12u), 12u); kr[29u] = bk_masked_k(q_idx(b, j1, h, 13u), 13u); vr[29u] = bk_masked_v(q_idx(b, j1, h, 13u), 13u);
    kr[30u] = bk_masked_k(q_idx(b, j1, h, 14u), 14u); vr[30u] = bk_masked_v(q_idx(b, j1, h, 14u), 14u); kr[31u] = bk_masked_k(q_idx(b, j1, h, 15u), 15u); vr[31u] = bk_masked_v(q_idx(b, j1, h, 15u), 15u);
    kr[32u] = bk_masked_k(q_idx(b, j2, h, 0u), 0u); vr[32u] = bk_masked_v(q_idx(b, j2, h, 0u), 0u); kr[33u] = bk_masked_k(q_idx(b, j2, h, 1u), 1u); vr[33u] = bk_masked_v(q_idx(b, j2, h, 1u), 1u);
    kr[34u] = bk_masked_k(q_idx(b, j2, h, 2u), 2u); vr[34u] = bk_masked_v(q_idx(b, j2, h, 2u), 2u); kr[35u] = bk_masked_k(q_idx(b, j2, h, 3u), 3u); vr[35u] = bk_masked_v(q_idx(b, j2, h, 3u), 3u);
    kr[36u] = bk_masked_k(q_idx(b, j2, h, 4u), 4u); vr[36u] = bk_masked_v(q_idx(b, j2, h, 4u), 4u); kr[37u] = bk_masked_k(q_idx(b, j2, h, 5u), 5u); vr[37u] = bk_masked_v(q_idx(b, j2, h, 5u), 5u);
    kr[38u] = bk_masked_k(q_idx(b, j2, h, 6u), 6u); vr[38u] = bk_masked_v(q_idx(b, j2, h, 6u), 6u); kr[39u] = bk_masked_k(q_idx(b, j2, h, 7u), 7u); vr[39u] = bk_masked_v(q_idx(b, j2, h, 7u), 7u);
    kr[40u] = bk_masked_k(q_idx(b, j2, h, 8u), 8u); vr[40u] = bk_masked_v(q_idx(b, j2, h, 8u), 8u); kr[41u] = bk_masked_k(q_idx(b, j2, h, 9u), 9u); vr[41u] = bk_masked_v(q_idx(b, j2, h, 9u), 9u);
    kr[42u] = bk_masked_k(q_idx(b, j2, h, 10u), 10u); vr[42u] = bk_masked_v(q_idx(b, j2, h, 10u), 10u); kr[43u] = bk_masked_k(q_idx(b, j2, h, 11u), 11u); vr[43u] = bk_masked_v(q_idx(b, j2, h, 11u), 11u);
    kr[44u] = bk_masked_k(q_idx(b, j2, h, 12u), 12u); vr[44u] = bk_masked_v(q_idx(b, j2, h, 12u), 12u); kr[45u] = bk_masked_k(q_idx(b, j2, h, 13u), 13u); vr[45u] = bk_masked_v(q_idx(b, j2, h, 13u), 13u);
    kr[46u] = bk_masked_k(q_idx(b, j2, h, 14u), 14u); vr[46u] = bk_masked_v(q_idx(b, j2, h, 14u), 14u); kr[47u] = bk_masked_k(q_idx(b, j2, h, 15u), 15u); vr[47u] = bk_masked_v(q_idx(b, j2, h, 15u), 15u);
    kr[48u] = bk_masked_k(q_idx(b, j3, h, 0u), 0u); vr[48u] = bk_masked_v(q_idx(b, j3, h, 0u), 0u); kr[49u] = bk_masked_k(q_idx(b, j3, h, 1u), 1u); vr[49u] = bk_masked_v(q_idx(b, j3, h, 1u), 1u);
    kr[50u] = bk_masked_k(q_idx(b, j3, h, 2u), 2u); vr[50u] = bk_masked_v(q_idx(b, j3, h, 2u), 2u); kr[51u] = bk_masked_k(q_idx(b, j3, h, 3u), 3u); vr[51u] = bk_masked_v(q_idx(b, j3, h, 3u), 3u);
    kr[52u] = bk_masked_k(q_idx(b, j3, h, 4u), 4u); vr[52u] = bk_masked_v(q_idx(b, j3, h, 4u), 4u); kr[53u] = bk_masked_k(q_idx(b, j3, h, 5u), 5u); vr[53u] = bk_masked_v(q_idx(b, j3, h, 5u), 5u);
    kr[54u] = bk_masked_k(q_idx(b, j3, h, 6u), 6u); vr[54u] = bk_masked_v(q_idx(b, j3, h, 6u), 6u); kr[55u] = bk_masked_k(q_idx(b, j3, h, 7u), 7u); vr[55u] = bk_masked_v(q_idx(b, j3, h, 7u), 7u);
    kr[56u] = bk_masked_k(q_idx(b, j3, h, 8u), 8u); vr[56u] = bk_masked_v(q_idx(b, j3, h, 8u), 8u); kr[57u] = bk_masked_k(q_idx(b, j3, h, 9u), 9u); vr[57u] = bk_masked_v(q_idx(b, j3, h, 9u), 9u);
    kr[58u] = bk_masked_k(q_idx(b, j3, h, 10u), 10u); vr[58u] = bk_masked_v(q_idx(b, j3, h, 10u), 10u); kr[59u] = bk_masked_k(q_idx(b, j3, h, 11u), 11u); vr[59u] = bk_masked_v(q_idx(b, j3, h, 11u), 11u);
    kr[60u] = bk_masked_k(q_idx(b, j3, h, 12u), 12u); vr[60u] = bk_masked_v(q_idx(b, j3, h, 12u), 12u); kr[61u] = bk_masked_k(q_idx(b, j3, h, 13u), 13u); vr[61u] = bk_masked_v(q_idx(b, j3, h, 13u), 13u);
    kr[62u] = bk_masked_k(q_idx(b, j3, h, 14u), 14u); vr[62u] = bk_masked_v(q_idx(b, j3, h, 14u), 14u); kr[63u] = bk_masked_k(q_idx(b, j3, h, 15u), 15u); vr[63u] = bk_masked_v(q_idx(b, j3, h, 15u), 15u);
    var qr: array<vec4<f32>, 16>;
    var dor: array<vec4<f32>, 16>;
    let cl = p.dh4 - 1u;
    for (var i = 0u; i < p.tokens; i++) {
        let at = (b * p.tokens + i) * p.d4 + h * p.dh4;
        let qr_0 = p.scale * bk_q[at + min(s + 0u, cl)]; let qr_1 = p.scale * bk_q[at + min(s + 4u, cl)]; let qr_2 = p.scale * bk_q[at + min(s + 8u, cl)]; let qr_3 = p.scale * bk_q[at + min(s + 12u, cl)];
        let dor_0 = bk_do[at + min(s + 0u, cl)]; let dor_1 = bk_do[at + min(s + 4u, cl)]; let dor_2 = bk_do[at + min(s + 8u, cl)]; let dor_3 = bk_do[at + min(s + 12u, cl)];
        share_row(&qr, qr_0, qr_1, qr_2, qr_3);
        share_row(&dor, dor_0, dor_1, dor_2, dor_3);
        let lse = bk_lse[row_idx(b, i, h)];
        let dd = bk_dsum[row_idx(b, i, h)];
        let pj = exp(vec4<f32>(dot16(&kr, 0u, &qr), dot16(&kr, 16u, &qr), dot16(&kr, 32u, &qr), dot16(&kr, 48u, &qr)) - lse);
        let dp = vec4<f32>(dot16(&vr, 0u, &dor), dot16(&vr, 16u, &dor), dot16(&vr, 32u, &dor), dot16(&vr, 48u, &dor));
        let ds = pj * (dp - dd);
        axpy16(&dv, 0u, pj.x, &dor); axpy16(&dv, 16u, pj.y, &dor); axpy16(&dv, 32u, pj.z, &dor); axpy16(&dv, 48u, pj.w, &dor);
        axpy16(&dk, 0u, ds.x, &qr); axpy16(&dk, 16u, ds.y, &qr); axpy16(&dk, 32u, ds.z, &qr); axpy16(&dk, 48u, ds.w, &qr);
    }
    store_dkv(b, j0, h, &dk, &dv, 0u);
    store_dkv(b, j1, h, &dk, &dv, 1u);
    store_dkv(b, j2, h, &dk, &dv, 2u);
    store_dkv(b, j3, h, &dk, &dv, 3u);
}
