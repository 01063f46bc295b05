"""PyTorch reference of the adapters of SPEC §3-§7, written from the SPEC, used only to make
test fixtures. Everything runs in float64 on the CPU.

The model is transformers' own ViTForImageClassification; the adapters are attached by
wrapping its modules:
- MoPPA wraps `layernorm_before` of the chosen layers: LN_before(MoPPA(x)), which is exactly
  x + Attn(LN_before(MoPPA(x))) since layernorm_before feeds only the attention branch.
- RLP wraps `vit.embeddings`: prompts go right after CLS, after position embeddings.
- FLoRA replaces the forward of targeted Linear/Conv2d modules.
- LoRA is PEFT itself.
"""

import math

import torch
from torch import nn

DTYPE = torch.float64


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix C with X = C x (SPEC §2)."""
    k = torch.arange(n, dtype=DTYPE).unsqueeze(1)
    i = torch.arange(n, dtype=DTYPE).unsqueeze(0)
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] = math.sqrt(1.0 / n)
    return c


def omega2(gh: int, gw: int) -> torch.Tensor:
    n = torch.arange(gh, dtype=DTYPE).unsqueeze(1)
    m = torch.arange(gw, dtype=DTYPE).unsqueeze(0)
    return (n * math.pi / gh) ** 2 + (m * math.pi / gw) ** 2


def router_probs(logits: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """pi[b, h] = softmax_b(logits[b, h] / tau[h])."""
    return torch.softmax(logits / tau.unsqueeze(0), dim=0)


def response(k: dict, t: dict, logits: torch.Tensor, tau: torch.Tensor, channels: int) -> torch.Tensor:
    """r[n, m, c] of SPEC §3 from K_b [gh, gw, heads], T_b [d], logits [3, heads], tau [heads]."""
    gh, gw, heads = k["heat"].shape
    d = channels // heads
    w2 = omega2(gh, gw).unsqueeze(-1)
    pi = router_probs(logits, tau)
    r = 0
    for b, name in enumerate(["heat", "wave", "poisson"]):
        kc = k[name].repeat_interleave(d, dim=2)  # [gh, gw, C], head of channel c = c // d
        tc = t[name].repeat(heads)  # [C], in-head index c' = c mod d
        e = torch.relu(kc * tc)
        if name == "heat":
            g = torch.exp(-e * w2)
        elif name == "wave":
            g = torch.cos(e * w2)
        else:
            g = e
        r = r + pi[b].repeat_interleave(d) * g
    return r


def spectral_filter(x: torch.Tensor, r: torch.Tensor, prefix: int, gh: int, gw: int) -> torch.Tensor:
    """Tokens x [B, T, C]: prefix tokens unchanged, grid part IDCT2(DCT2(x) * r) per channel."""
    b, t, c = x.shape
    grid = x[:, prefix:, :].reshape(b, gh, gw, c)
    ch, cw = dct_matrix(gh), dct_matrix(gw)
    spec = torch.einsum("kn,bnmc,lm->bklc", ch, grid, cw)
    back = torch.einsum("kn,bklc,lm->bnmc", ch, spec * r, cw)
    return torch.cat([x[:, :prefix, :], back.reshape(b, gh * gw, c)], dim=1)


def route_entropy(logits: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    pi = router_probs(logits, tau)
    return -(pi * torch.log(pi + 1e-8)).mean()


class MoppaPrefilter(nn.Module):
    """LN_before(MoPPA_l(x)) for one layer; K is shared (passed in), T/logits/tau are own."""

    def __init__(self, ln: nn.Module, shared_k: dict, t: dict, logits, tau, prefix: int, gh: int, gw: int):
        super().__init__()
        self.ln, self.k, self.prefix, self.gh, self.gw = ln, shared_k, prefix, gh, gw
        self.t = nn.ParameterDict({n: nn.Parameter(v) for n, v in t.items()})
        self.logits = nn.Parameter(logits)
        self.tau = nn.Parameter(tau)

    def forward(self, x):
        r = response(self.k, self.t, self.logits, self.tau, x.shape[-1])
        return self.ln(spectral_filter(x, r, self.prefix, self.gh, self.gw))


def attach_moppa(model, params: dict, layers, gh: int, gw: int, prefix: int = 1):
    """params: k_heat/k_wave/k_poisson and per layer l: t_*, router_logits, temperature (tensors)."""
    shared = nn.ParameterDict({n: nn.Parameter(params[f"k_{n}"]) for n in ["heat", "wave", "poisson"]})
    model.moppa_k = shared
    blocks = model.vit.encoder.layer if hasattr(model.vit, "encoder") else model.vit.layers
    filters = {}
    for l in layers:
        blk = blocks[l]
        t = {n: params[f"{l}.t_{n}"] for n in ["heat", "wave", "poisson"]}
        f = MoppaPrefilter(blk.layernorm_before, shared, t, params[f"{l}.router_logits"], params[f"{l}.temperature"], prefix, gh, gw)
        blk.layernorm_before = f
        filters[l] = f
    return shared, filters


class RlpEmbeddings(nn.Module):
    def __init__(self, emb: nn.Module, p0, a, b, scale: float):
        super().__init__()
        self.emb, self.scale = emb, scale
        self.register_buffer("p0", p0)
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)

    @property
    def patch_embeddings(self):
        return self.emb.patch_embeddings

    def prompts(self):
        return self.p0 + self.scale * self.a @ self.b

    def forward(self, pixel_values, *args, **kwargs):
        out = self.emb(pixel_values, *args, **kwargs)
        p = self.prompts().unsqueeze(0).expand(out.shape[0], -1, -1)
        return torch.cat([out[:, :1], p, out[:, 1:]], dim=1)


def attach_rlp(model, p0, a, b, scale: float):
    model.vit.embeddings = RlpEmbeddings(model.vit.embeddings, p0, a, b, scale)
    return model.vit.embeddings


def flora_delta(core: torch.Tensor, factors, scale: float) -> torch.Tensor:
    """scale * G x_1 U_1 ... x_N U_N."""
    out = core
    for i, u in enumerate(factors):
        out = torch.tensordot(u, out.movedim(i, 0), dims=([1], [0])).movedim(0, i)
    return scale * out


class FloraLinear(nn.Module):
    def __init__(self, base: nn.Linear, core, factors, scale: float):
        super().__init__()
        self.base, self.scale = base, scale
        self.core = nn.Parameter(core)
        self.factors = nn.ParameterList([nn.Parameter(f) for f in factors])

    def forward(self, x):
        u1, u2 = self.factors
        return self.base(x) + self.scale * ((x @ u2) @ self.core.T) @ u1.T


class FloraConv(nn.Module):
    def __init__(self, base: nn.Conv2d, core, factors, scale: float):
        super().__init__()
        self.base, self.scale = base, scale
        self.core = nn.Parameter(core)
        self.factors = nn.ParameterList([nn.Parameter(f) for f in factors])

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        w = self.base.weight + flora_delta(self.core, list(self.factors), self.scale)
        return nn.functional.conv2d(x, w, self.base.bias, self.base.stride, self.base.padding, self.base.dilation, self.base.groups)


def set_module(model, path: str, module: nn.Module):
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def tiny_vit_config(**kw):
    from transformers import ViTConfig

    base = dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        image_size=8,
        patch_size=2,
        num_channels=3,
        num_labels=5,
        layer_norm_eps=1e-6,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return ViTConfig(**base)


def f32_exact(t: torch.Tensor) -> torch.Tensor:
    """Rounds to f32 and back, so a value stored as f32 is exactly what the reference used."""
    return t.to(torch.float32).to(DTYPE)
