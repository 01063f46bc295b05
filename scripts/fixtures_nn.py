"""PyTorch fixtures for the LayerNorm, softmax, GELU, erf and cross-entropy tests.

Writes tests/fixtures/nn_torch.safetensors. Inputs are stored as f32; every expected output
and gradient is computed by PyTorch in float64 from those f32 inputs and stored as f64.
Gradients are of the loss <y, w> with a stored random w (for cross-entropy: the scalar
loss times a stored factor). Labels are u32. Run: python scripts/fixtures_nn.py
"""

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nn_torch.safetensors"


def f32(t):
    return t.to(torch.float32)


def grads(y, w, *inputs):
    return torch.autograd.grad((y * w).sum(), inputs)


def main():
    g = torch.Generator().manual_seed(20240607)
    out = {}

    def put(name, t):
        out[name] = t.detach().numpy() if isinstance(t, torch.Tensor) else t

    # LayerNorm on [2, 5, 48]; row (1, 3) has a tiny spread so eps matters.
    x = f32(torch.randn(2, 5, 48, generator=g, dtype=torch.float64) * 1.5 + 0.3)
    x[1, 3] = f32(0.01 + 1e-3 * torch.randn(48, generator=g, dtype=torch.float64))
    gamma = f32(1.0 + 0.2 * torch.randn(48, generator=g, dtype=torch.float64))
    beta = f32(0.1 * torch.randn(48, generator=g, dtype=torch.float64))
    w = f32(torch.randn(2, 5, 48, generator=g, dtype=torch.float64))
    for name, t in [("ln_x", x), ("ln_gamma", gamma), ("ln_beta", beta), ("ln_w", w)]:
        put(name, t)
    for tag, eps in [("1e-12", 1e-12), ("1e-6", 1e-6)]:
        xd, gd, bd = (t.double().requires_grad_() for t in (x, gamma, beta))
        y = torch.nn.functional.layer_norm(xd, (48,), gd, bd, eps)
        dx, dg, db = grads(y, w.double(), xd, gd, bd)
        put(f"ln_eps{tag}_y", y)
        put(f"ln_eps{tag}_dx", dx)
        put(f"ln_eps{tag}_dgamma", dg)
        put(f"ln_eps{tag}_dbeta", db)

    # Softmax of alpha * x over rows of attention length 197, and a plain one.
    for tag, shape, alpha, spread in [("attn", (4, 197), 0.125, 8.0), ("plain", (3, 10), 1.0, 3.0)]:
        x = f32(torch.randn(*shape, generator=g, dtype=torch.float64) * spread)
        w = f32(torch.randn(*shape, generator=g, dtype=torch.float64))
        xd = x.double().requires_grad_()
        y = torch.softmax(alpha * xd, dim=-1)
        (dx,) = grads(y, w.double(), xd)
        put(f"softmax_{tag}_x", x)
        put(f"softmax_{tag}_w", w)
        put(f"softmax_{tag}_alpha", np.array([alpha], dtype=np.float32))
        put(f"softmax_{tag}_y", y)
        put(f"softmax_{tag}_dx", dx)

    # Exact GELU on a grid over [-10, 10] plus random values.
    x = f32(
        torch.cat(
            [
                torch.linspace(-10, 10, 801, dtype=torch.float64),
                3 * torch.randn(399, generator=g, dtype=torch.float64),
            ]
        )
    )
    w = f32(torch.randn(x.shape, generator=g, dtype=torch.float64))
    xd = x.double().requires_grad_()
    y = torch.nn.functional.gelu(xd, approximate="none")
    (dx,) = grads(y, w.double(), xd)
    put("gelu_x", x)
    put("gelu_w", w)
    put("gelu_y", y)
    put("gelu_dx", dx)

    # erf at f32 arguments: 0, tiny, boundaries of the pieces, a grid over [-10, 10].
    special = [0.0, 1e-38, 1e-30, 1e-10, 1e-5, 1e-3, 0.1, 0.5, 0.999, 1.0, 1.001, 2.499, 2.5, 3.9, 4.0, 6.0, 10.0]
    xs = np.concatenate([special, [-s for s in special[1:]], np.linspace(-10, 10, 1001)]).astype(np.float32)
    put("erf_x", xs)
    put("erf_y", np.array([math.erf(float(v)) for v in xs], dtype=np.float64))

    # Cross-entropy: [8, 10] logits, two rows with large magnitudes, dloss = 0.7.
    logits = torch.randn(8, 10, generator=g, dtype=torch.float64) * 2
    logits[2] *= 50
    logits[5] += 80
    logits = f32(logits)
    labels = torch.randint(0, 10, (8,), generator=g)
    ld = logits.double().requires_grad_()
    loss = torch.nn.functional.cross_entropy(ld, labels)
    (dl,) = torch.autograd.grad(loss * 0.7, ld)
    rows = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")
    put("ce_logits", logits)
    put("ce_labels", labels.numpy().astype(np.uint32))
    put("ce_dloss", np.array([0.7], dtype=np.float32))
    put("ce_loss", loss.reshape(1))
    put("ce_rows", rows)
    put("ce_correct", (logits.argmax(dim=1) == labels).double())
    put("ce_dlogits", dl)

    for k, v in out.items():
        assert v.dtype in (np.float32, np.float64, np.uint32), k
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
