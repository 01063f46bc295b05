"""MoPPA prior, router and filter fixtures from PyTorch autograd (float64):
tests/fixtures/priors_torch.safetensors.

Inputs are stored as f32; everything expected is computed in float64 from those f32 values.

Priors (SPEC section 3) on a 6x7 grid, 3 heads of d = 4 channels:
  k_{heat,wave,poisson} [gh, gw, heads], t_{...} [d], logits [3, heads], tau [heads],
  w [gh, gw, C]: loss = sum(r * w). Stored: r, probs, and grad_<input> for all eight inputs.
  Some K*T products are negative and two are exactly zero (ReLU' = 0 there, as in torch).
  entropy = -mean(pi * log(pi + 1e-8)); entropy_grad_logits, entropy_grad_tau.
Filter on a 14x14 grid with one prefix token, batch 2, C = 12:
  filter_x [2, 197, 12], filter_r [14, 14, 12], filter_w [2, 197, 12];
  filter_y = IDCT2(DCT2(x_grid) * r) (prefix copied), loss = sum(y * w):
  filter_grad_x, filter_grad_r. The DCT is a matmul with the orthonormal DCT-II matrix.
"""

import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file

torch.set_default_dtype(torch.float64)


def dct_matrix(n):
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (j + 0.5) * k / n)
    s = torch.full((n, 1), math.sqrt(2.0 / n))
    s[0, 0] = math.sqrt(1.0 / n)
    return s * c


def response(k, t, logits, tau, gh, gw):
    heads, d = k[0].shape[2], t[0].shape[0]
    n = torch.arange(gh, dtype=torch.float64)[:, None]
    m = torch.arange(gw, dtype=torch.float64)[None, :]
    w2 = ((n * math.pi / gh) ** 2 + (m * math.pi / gw) ** 2)[:, :, None]
    pi = torch.softmax(logits / tau[None, :], dim=0)
    r = 0
    for b in range(3):
        # e[n, m, h*d + c'] = relu(K[n, m, h] * T[c'])
        e = torch.relu(k[b][:, :, :, None] * t[b][None, None, None, :]).reshape(gh, gw, heads * d)
        g = [torch.exp(-e * w2), torch.cos(e * w2), e][b]
        r = r + pi[b].repeat_interleave(d)[None, None, :] * g
    return r, pi


def f32(rng, shape, mean=0.0, std=1.0):
    return (rng.standard_normal(shape) * std + mean).astype(np.float32)


def leaf(a):
    return torch.tensor(a.astype(np.float64), requires_grad=True)


def main():
    rng = np.random.default_rng(7)
    out = {}
    gh, gw, heads, d = 6, 7, 3, 4
    names = ["heat", "wave", "poisson"]
    ks = [f32(rng, (gh, gw, heads), 0.8, 0.8) for _ in names]
    ts = [f32(rng, (d,), 0.3, 0.4) for _ in names]
    ks[0][0, 0, 0] = 0.0
    ts[1][1] = 0.0
    logits = f32(rng, (3, heads))
    tau = rng.uniform(0.5, 5.0, (heads,)).astype(np.float32)
    w = f32(rng, (gh, gw, heads * d))
    kl, tl, ll, taul = [leaf(a) for a in ks], [leaf(a) for a in ts], leaf(logits), leaf(tau)
    r, pi = response(kl, tl, ll, taul, gh, gw)
    (r * torch.tensor(w.astype(np.float64))).sum().backward()
    for i, name in enumerate(names):
        out[f"k_{name}"], out[f"t_{name}"] = ks[i], ts[i]
        out[f"grad_k_{name}"] = kl[i].grad.numpy()
        out[f"grad_t_{name}"] = tl[i].grad.numpy()
    out["logits"], out["tau"], out["w"] = logits, tau, w
    out["r"], out["probs"] = r.detach().numpy(), pi.detach().numpy()
    out["grad_logits"], out["grad_tau"] = ll.grad.numpy(), taul.grad.numpy()

    ll, taul = leaf(logits), leaf(tau)
    p = torch.softmax(ll / taul[None, :], dim=0)
    h = -(p * torch.log(p + 1e-8)).mean()
    h.backward()
    out["entropy"] = np.array([h.item()])
    out["entropy_grad_logits"], out["entropy_grad_tau"] = ll.grad.numpy(), taul.grad.numpy()

    fh, fw, batch, prefix, ch = 14, 14, 2, 1, 12
    x = f32(rng, (batch, prefix + fh * fw, ch))
    rf = rng.uniform(0.0, 1.5, (fh, fw, ch)).astype(np.float32)
    wf = f32(rng, (batch, prefix + fh * fw, ch))
    xl, rl = leaf(x), leaf(rf)
    chm, cwm = dct_matrix(fh), dct_matrix(fw)
    grid = xl[:, prefix:, :].reshape(batch, fh, fw, ch)
    spec = torch.einsum("kn,bnmc,lm->bklc", chm, grid, cwm) * rl[None]
    back = torch.einsum("kn,bklc,lm->bnmc", chm, spec, cwm).reshape(batch, fh * fw, ch)
    y = torch.cat([xl[:, :prefix, :], back], dim=1)
    (y * torch.tensor(wf.astype(np.float64))).sum().backward()
    out["filter_x"], out["filter_r"], out["filter_w"] = x, rf, wf
    out["filter_y"] = y.detach().numpy()
    out["filter_grad_x"], out["filter_grad_r"] = xl.grad.numpy(), rl.grad.numpy()

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "priors_torch.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path)


if __name__ == "__main__":
    main()
