"""PyTorch fixture for the test of one ViT transformer layer (tests/layer.rs).

Runs one layer (LN -> attention -> residual -> LN -> MLP -> residual) in float64 plain torch,
checked against transformers' own `ViTLayer` (whose eager attention takes the softmax in
float32, hence plain torch for the expected values), on tokens [2, 17, 24] (CLS plus a 4x4 grid) with 3 heads of 8 channels and an MLP
of 96, and writes tests/fixtures/layer_torch.safetensors:

- inputs (f32): `x` [2, 17, 24], `w` [2, 17, 24] (the weight of the loss <y, w>), and every
  weight of the layer under its on-disk name `vit.encoder.layer.0.<...>`;
- expected (f64, computed from those f32 values): `y` (the layer's output), `dx` (the
  gradient of <y, w> with respect to x) and `grad.<name>` for every weight.

Weights are drawn with a larger spread than a fresh model's and LayerNorm gains and biases
are random, so every term matters. Run: python scripts/fixtures_layer.py
"""

from pathlib import Path

import torch
from safetensors.numpy import save_file
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "layer_torch.safetensors"

D, HEADS, MLP, BATCH, TOKENS, EPS = 24, 3, 96, 2, 17, 1e-6

# transformers 5 attribute path -> on-disk name (SPEC §8) of layer 0.
NAMES = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    # transformers 4 spells the modules as on disk.
    "attention.attention.query": "attention.attention.query",
    "attention.attention.key": "attention.attention.key",
    "attention.attention.value": "attention.attention.value",
    "attention.output.dense": "attention.output.dense",
    "intermediate.dense": "intermediate.dense",
    "output.dense": "output.dense",
}


def on_disk(key):
    module, leaf = key.rsplit(".", 1)
    return f"vit.encoder.layer.0.{NAMES[module]}.{leaf}"


def plain_layer(x, sd):
    """LN -> multi-head attention -> residual -> LN -> GELU MLP -> residual."""
    p = "vit.encoder.layer.0."

    def lin(h, name):
        return h @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

    def ln(h, name):
        return torch.nn.functional.layer_norm(h, (D,), sd[p + name + ".weight"], sd[p + name + ".bias"], EPS)

    b, t, _ = x.shape
    h = ln(x, "layernorm_before")
    q, k, v = (lin(h, f"attention.attention.{n}").view(b, t, HEADS, -1).transpose(1, 2) for n in ("query", "key", "value"))
    probs = torch.softmax(q @ k.transpose(-1, -2) / (D // HEADS) ** 0.5, dim=-1)
    ctx = (probs @ v).transpose(1, 2).reshape(b, t, D)
    x = x + lin(ctx, "attention.output.dense")
    h = torch.nn.functional.gelu(lin(ln(x, "layernorm_after"), "intermediate.dense"))
    return x + lin(h, "output.dense")


def main():
    g = torch.Generator().manual_seed(20250611)
    config = ViTConfig(
        hidden_size=D,
        num_attention_heads=HEADS,
        intermediate_size=MLP,
        layer_norm_eps=EPS,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        qkv_bias=True,
    )
    config._attn_implementation = "eager"
    layer = ViTLayer(config).double().eval()
    with torch.no_grad():
        for key, p in layer.named_parameters():
            if key.startswith("layernorm") and key.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
            # Round to f32 so the f64 reference sees exactly what the GPU gets.
            p.copy_(p.float().double())
    x = torch.randn(BATCH, TOKENS, D, generator=g, dtype=torch.float64).float()
    w = torch.randn(BATCH, TOKENS, D, generator=g, dtype=torch.float64).float()

    xd = x.double().requires_grad_()
    params = dict(layer.named_parameters())
    sd = {on_disk(k): v for k, v in params.items()}
    # The expected values come from the layer written out in plain float64 torch: the
    # module's eager attention takes its softmax in float32. The module checks the meaning.
    y = plain_layer(xd, sd)
    with torch.no_grad():
        y_module = layer(xd)
    y_module = y_module[0] if isinstance(y_module, tuple) else y_module
    diff = (y - y_module).abs().max().item()
    assert diff < 1e-5, f"ViTLayer and the plain layer differ by {diff}"
    grads = torch.autograd.grad((y * w.double()).sum(), [xd, *params.values()])

    out = {"x": x.numpy(), "w": w.numpy(), "y": y.detach().numpy(), "dx": grads[0].numpy()}
    for (key, p), gp in zip(params.items(), grads[1:]):
        out[on_disk(key)] = p.detach().float().numpy()
        out[f"grad.{on_disk(key)}"] = gp.numpy()
    save_file(out, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
