"""PyTorch fixture for the ViT patch embedding (a conv with stride = kernel).

Writes tests/fixtures/patch_embed_torch.safetensors: f32 inputs (images, weight, bias, the
upstream gradient) and f64 expectations computed by torch in float64 from those inputs:
tokens [B, gh*gw, D] and the gradients of L = <tokens, grad_out> for weight, bias, images.
H and W are not multiples of the patch, so the strided conv drops the last rows/columns.
"""

import torch
from safetensors.torch import save_file

torch.manual_seed(7)
B, C, H, W, P, D = 2, 3, 9, 10, 4, 5

images = torch.randn(B, C, H, W, dtype=torch.float32)
weight = (torch.randn(D, C, P, P) * 0.2).float()
bias = torch.randn(D).float()
gh, gw = H // P, W // P
grad_out = torch.randn(B, gh * gw, D).float()

x = images.double().requires_grad_(True)
w = weight.double().requires_grad_(True)
b = bias.double().requires_grad_(True)
conv = torch.nn.functional.conv2d(x, w, b, stride=P)  # [B, D, gh, gw]
tokens = conv.flatten(2).transpose(1, 2)  # [B, gh*gw, D], patches row-major
(tokens * grad_out.double()).sum().backward()

save_file(
    {
        "images": images.contiguous(),
        "weight": weight.contiguous(),
        "bias": bias.contiguous(),
        "grad_out": grad_out.contiguous(),
        "tokens": tokens.detach().contiguous(),
        "grad_weight": w.grad.contiguous(),
        "grad_bias": b.grad.contiguous(),
        "grad_images": x.grad.contiguous(),
    },
    "tests/fixtures/patch_embed_torch.safetensors",
)
