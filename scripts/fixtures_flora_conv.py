"""FLoRA on grouped and depthwise convolutions, and the plain conv op, from PyTorch.

FLoRA's modes of a conv weight are (out, in/groups, kh, kw): the weight's own shape, so
grouped and depthwise convs work (the official FLoRA code builds the factor of the second
mode with `in` channels and crashes there). Each case wraps an nn.Conv2d in
torch_reference.FloraConv with a random non-zero core, takes L = sum(y * grad_out), and
records y and the gradients of the core, every factor and the input, in float64 from inputs
rounded to f32.

Output: tests/fixtures/flora_conv_torch.safetensors with, per case `<c>`:
  inputs (f32):  <c>.x, <c>.weight, <c>.bias, <c>.core, <c>.factor.{i}, <c>.grad_out
  settings:      <c>.spec (i64 [stride_h, stride_w, pad_h, pad_w, groups]), <c>.scale (f64 [1])
  expected (f64): <c>.y, <c>.grad.core, <c>.grad.factor.{i}, <c>.grad.x
and for the plain conv case `conv` (no FLoRA): conv.{x, weight, bias, grad_out, spec} and
conv.y, conv.grad.{x, weight, bias}.
"""

import torch

import torch_reference as ref
from safetensors.torch import save_file

OUT = "tests/fixtures/flora_conv_torch.safetensors"

# name: (batch, in, out, kernel, stride, padding, groups, input (h, w), ranks, scale)
FLORA_CASES = {
    "grouped": (2, 4, 6, (3, 3), (2, 2), (1, 1), 2, (7, 6), 2, 0.8),
    "depthwise": (2, 5, 5, (3, 3), (1, 1), (1, 1), 5, (6, 5), [3, 1, 2, 3], 1.3),
}


def rand(shape, std, g):
    return ref.f32_exact(torch.randn(*shape, generator=g, dtype=ref.DTYPE) * std)


def conv_module(cin, cout, kernel, stride, padding, groups, g):
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups).double()
    with torch.no_grad():
        conv.weight.copy_(rand(conv.weight.shape, 0.3, g))
        conv.bias.copy_(rand(conv.bias.shape, 0.3, g))
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(False)
    return conv


def spec_tensor(stride, padding, groups):
    return torch.tensor([stride[0], stride[1], padding[0], padding[1], groups], dtype=torch.int64)


def flora_case(out, name, case, g):
    batch, cin, cout, kernel, stride, padding, groups, (h, w), r, scale = case
    conv = conv_module(cin, cout, kernel, stride, padding, groups, g)
    dims = list(conv.weight.shape)
    assert dims == [cout, cin // groups, *kernel], dims
    ranks = [min(r, d) for d in dims] if isinstance(r, int) else r
    core = rand(ranks, 0.5, g)
    factors = [rand([d, k], (1 / (2 * k)) ** 0.5, g) for d, k in zip(dims, ranks)]
    mod = ref.FloraConv(conv, core, factors, scale)
    x = rand([batch, cin, h, w], 1.0, g).requires_grad_(True)
    y = mod(x)
    grad_out = rand(y.shape, 1.0, g)
    (y * grad_out).sum().backward()
    out[f"{name}.x"] = x.detach().float()
    out[f"{name}.weight"] = conv.weight.detach().float()
    out[f"{name}.bias"] = conv.bias.detach().float()
    out[f"{name}.core"] = core.float()
    for i, f in enumerate(factors):
        out[f"{name}.factor.{i}"] = f.float()
        out[f"{name}.grad.factor.{i}"] = mod.factors[i].grad.detach()
    out[f"{name}.grad_out"] = grad_out.float()
    out[f"{name}.spec"] = spec_tensor(stride, padding, groups)
    out[f"{name}.scale"] = torch.tensor([scale], dtype=ref.DTYPE)
    out[f"{name}.y"] = y.detach()
    out[f"{name}.grad.core"] = mod.core.grad.detach()
    out[f"{name}.grad.x"] = x.grad.detach()


def plain_conv(out, g):
    """A grouped conv with a non-square kernel and different strides and paddings per axis."""
    stride, padding, groups = (2, 1), (1, 2), 3
    conv = conv_module(6, 9, (3, 2), stride, padding, groups, g)
    conv.weight.requires_grad_(True)
    conv.bias.requires_grad_(True)
    x = rand([3, 6, 9, 7], 1.0, g).requires_grad_(True)
    y = conv(x)
    grad_out = rand(y.shape, 1.0, g)
    (y * grad_out).sum().backward()
    for key, t in [("x", x), ("weight", conv.weight), ("bias", conv.bias)]:
        out[f"conv.{key}"] = t.detach().float()
        out[f"conv.grad.{key}"] = t.grad.detach()
    out["conv.grad_out"] = grad_out.float()
    out["conv.spec"] = spec_tensor(stride, padding, groups)
    out["conv.y"] = y.detach()


def main():
    g = torch.Generator().manual_seed(11)
    out = {}
    for name, case in FLORA_CASES.items():
        flora_case(out, name, case, g)
    plain_conv(out, g)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)


if __name__ == "__main__":
    main()
