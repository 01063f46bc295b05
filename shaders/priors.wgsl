// Physical-prior responses and the router of MoPPA (SPEC §3; host: src/ops/priors.rs; twins:
// src/reference/priors.rs).
//
// Grid gh×gw, cell `pos` = n·gw + m, ω²(pos) = (nπ/gh)² + (mπ/gw)². C = heads·d channels;
// channel c has head h = c / d and in-head index c' = c % d. Branches b: 0 heat, 1 wave,
// 2 poisson.
//   u_b[pos, c] = K_b[pos, h] · T_b[c'],  e_b = ReLU(u_b)
//   g_heat = exp(−e ω²),  g_wave = cos(e ω²),  g_poisson = e
//   π[b, h] = softmax_b(logits[b, h] / τ[h])
//   r[pos, c] = Σ_b π[b, h] · g_b[pos, c]
//   H = −mean_{b,h} π log(π + 1e-8)
//
// Layouts: K_b [gh·gw·heads], T_b [d], logits and π [3·heads], τ [heads], r [gh·gw·C].
// Backward, per branch b (p.branch), given ∂r:
//   prior_grad_u:     ∂u_b = ∂r · π[b,h] · g_b'(e_b) · [u_b > 0]        (ReLU'(0) = 0)
//   prior_grad_k:     ∂K_b[pos, h] = Σ_c' ∂u_b[pos, h·d + c'] · T_b[c']
//   prior_grad_t:     ∂T_b[c'] = Σ_{pos,h} ∂u_b[pos, h·d + c'] · K_b[pos, h]
//   prior_grad_probs: ∂π[b, h] = Σ_{pos,c'} ∂r[pos, h·d + c'] · g_b[pos, h·d + c']
//   router_grad:      ∂z = π ⊙ (∂π − Σ_b π ∂π) with z = logits/τ;  ∂logits = ∂z/τ,
//                     ∂τ = −Σ_b ∂z_b · logits[b]/τ²
//   route_entropy_grad: the same with ∂π_b = −∂H/(3·heads) · (log(π_b + 1e-8) + π_b/(π_b + 1e-8)).
// Cosines and sines reduce their argument by 2π in two parts first, so a large e·ω² keeps
// its accuracy.

const WG: u32 = 256u;
const PI: f32 = 3.14159265358979323846;
const EPS_LOG: f32 = 1e-8;

// Host: ops::priors::PriorParams.
struct PriorParams {
    gh: u32,
    gw: u32,
    heads: u32,
    d: u32,
    branch: u32,
    total: u32,
}

var<immediate> p: PriorParams;
var<workgroup> red: array<f32, WG>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn omega2(pos: u32) -> f32 {
    let a = f32(pos / p.gw) * PI / f32(p.gh);
    let b = f32(pos % p.gw) * PI / f32(p.gw);
    return a * a + b * b;
}

// x − 2πk with k = round(x / 2π); 2π = 6.28125 + 1.9353071795864769e-3 (the first part exact).
fn reduce_2pi(x: f32) -> f32 {
    let k = round(x * 0.15915494309189535);
    return (x - k * 6.28125) - k * 1.9353071795864769e-3;
}

fn response(branch: u32, e: f32, w2: f32) -> f32 {
    switch branch {
        case 0u: { return exp(-e * w2); }
        case 1u: { return cos(reduce_2pi(e * w2)); }
        default: { return e; }
    }
}

fn response_slope(branch: u32, e: f32, w2: f32) -> f32 {
    switch branch {
        case 0u: { return -w2 * exp(-e * w2); }
        case 1u: { return -w2 * sin(reduce_2pi(e * w2)); }
        default: { return 1.0; }
    }
}

// Sums `v` over the workgroup; every invocation must call it.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// ---- router -------------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> tau: array<f32>;
@group(0) @binding(2) var<storage, read_write> router_out: array<f32>;

fn softmax3(h: u32) -> vec3<f32> {
    let z = vec3(logits[h], logits[p.heads + h], logits[2u * p.heads + h]) / tau[h];
    let ez = exp(z - max(z.x, max(z.y, z.z)));
    return ez / (ez.x + ez.y + ez.z);
}

@compute @workgroup_size(WG)
fn router_probs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = flat(gid, nwg);
    if (h >= p.heads) { return; }
    let pi = softmax3(h);
    for (var b = 0u; b < 3u; b++) { router_out[b * p.heads + h] = pi[b]; }
}

// One workgroup; router_out[0] = H.
@compute @workgroup_size(WG)
fn route_entropy(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var h = lid; h < p.heads; h += WG) {
        let pi = softmax3(h);
        acc -= dot(pi, log(pi + vec3(EPS_LOG)));
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) { router_out[0] = total / f32(3u * p.heads); }
}

@group(0) @binding(2) var<storage, read> upstream: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> dtau: array<f32>;

fn softmax3_backward(h: u32, pi: vec3<f32>, dpi: vec3<f32>) {
    let dz = pi * (dpi - dot(pi, dpi));
    let t = tau[h];
    let l = vec3(logits[h], logits[p.heads + h], logits[2u * p.heads + h]);
    for (var b = 0u; b < 3u; b++) { dlogits[b * p.heads + h] = dz[b] / t; }
    dtau[h] = -dot(dz, l) / (t * t);
}

// upstream = ∂π [3·heads].
@compute @workgroup_size(WG)
fn router_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = flat(gid, nwg);
    if (h >= p.heads) { return; }
    let dpi = vec3(upstream[h], upstream[p.heads + h], upstream[2u * p.heads + h]);
    softmax3_backward(h, softmax3(h), dpi);
}

// upstream = ∂H [1].
@compute @workgroup_size(WG)
fn route_entropy_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = flat(gid, nwg);
    if (h >= p.heads) { return; }
    let pi = softmax3(h);
    let dpi = -upstream[0] / f32(3u * p.heads) * (log(pi + vec3(EPS_LOG)) + pi / (pi + vec3(EPS_LOG)));
    softmax3_backward(h, pi, dpi);
}

// ---- responses ----------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> k_heat: array<f32>;
@group(0) @binding(1) var<storage, read> k_wave: array<f32>;
@group(0) @binding(2) var<storage, read> k_poisson: array<f32>;
@group(0) @binding(3) var<storage, read> t_heat: array<f32>;
@group(0) @binding(4) var<storage, read> t_wave: array<f32>;
@group(0) @binding(5) var<storage, read> t_poisson: array<f32>;
@group(0) @binding(6) var<storage, read> probs: array<f32>;
@group(0) @binding(7) var<storage, read_write> r_out: array<f32>;

@compute @workgroup_size(WG)
fn prior_response(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat(gid, nwg);
    if (e >= p.total) { return; }
    let channels = p.heads * p.d;
    let c = e % channels;
    let pos = e / channels;
    let h = c / p.d;
    let cc = c % p.d;
    let kk = pos * p.heads + h;
    let w2 = omega2(pos);
    let heat = response(0u, max(k_heat[kk] * t_heat[cc], 0.0), w2);
    let wave = response(1u, max(k_wave[kk] * t_wave[cc], 0.0), w2);
    let poisson = response(2u, max(k_poisson[kk] * t_poisson[cc], 0.0), w2);
    r_out[e] = probs[h] * heat + probs[p.heads + h] * wave + probs[2u * p.heads + h] * poisson;
}

// ---- response backward, one branch per dispatch -------------------------------------------

@group(0) @binding(0) var<storage, read> kb: array<f32>;
@group(0) @binding(1) var<storage, read> tb: array<f32>;
@group(0) @binding(2) var<storage, read> gu_probs: array<f32>;
@group(0) @binding(3) var<storage, read> gu_dr: array<f32>;
@group(0) @binding(4) var<storage, read_write> gu_du: array<f32>;

@compute @workgroup_size(WG)
fn prior_grad_u(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat(gid, nwg);
    if (e >= p.total) { return; }
    let channels = p.heads * p.d;
    let c = e % channels;
    let pos = e / channels;
    let h = c / p.d;
    let u = kb[pos * p.heads + h] * tb[c % p.d];
    var du = 0.0;
    if (u > 0.0) {
        du = gu_dr[e] * gu_probs[p.branch * p.heads + h] * response_slope(p.branch, u, omega2(pos));
    }
    gu_du[e] = du;
}

@group(0) @binding(2) var<storage, read> gp_dr: array<f32>;
@group(0) @binding(3) var<storage, read_write> gp_dprobs: array<f32>;

// One workgroup per head; writes row p.branch of ∂π.
@compute @workgroup_size(WG)
fn prior_grad_probs(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = wid.x + wid.y * nwg.x;
    if (h >= p.heads) { return; }
    let channels = p.heads * p.d;
    var acc = 0.0;
    for (var q = lid; q < p.gh * p.gw * p.d; q += WG) {
        let pos = q / p.d;
        let cc = q % p.d;
        let e = max(kb[pos * p.heads + h] * tb[cc], 0.0);
        acc += gp_dr[pos * channels + h * p.d + cc] * response(p.branch, e, omega2(pos));
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) { gp_dprobs[p.branch * p.heads + h] = total; }
}

@group(0) @binding(0) var<storage, read> du_in: array<f32>;
@group(0) @binding(1) var<storage, read> factor: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_out: array<f32>;

// factor = T_b; one thread per (pos, h).
@compute @workgroup_size(WG)
fn prior_grad_k(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = flat(gid, nwg);
    if (q >= p.total) { return; }
    let h = q % p.heads;
    let pos = q / p.heads;
    let base = pos * p.heads * p.d + h * p.d;
    var acc = 0.0;
    for (var cc = 0u; cc < p.d; cc++) { acc += du_in[base + cc] * factor[cc]; }
    grad_out[q] = acc;
}

// factor = K_b; one workgroup per c'.
@compute @workgroup_size(WG)
fn prior_grad_t(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let cc = wid.x + wid.y * nwg.x;
    if (cc >= p.d) { return; }
    var acc = 0.0;
    for (var q = lid; q < p.gh * p.gw * p.heads; q += WG) {
        acc += du_in[(q / p.heads) * p.heads * p.d + (q % p.heads) * p.d + cc] * factor[q];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) { grad_out[cc] = total; }
}
