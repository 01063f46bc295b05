"""ViT forward fixtures: a tiny random ViTForImageClassification saved by transformers as a
single file and sharded, with inputs and transformers' own logits (computed in float64).

Outputs: tests/fixtures/vit_tiny/ (config.json, model.safetensors),
tests/fixtures/vit_tiny_sharded/ (config.json, model-0000x-of-0000y.safetensors + index),
tests/fixtures/vit_forward.safetensors (pixel_values f32, logits f64).
"""

import os
import shutil

import torch
from safetensors.torch import save_file
from torch_reference import f32_exact, tiny_vit_config

OUT = "tests/fixtures"


def main() -> None:
    torch.manual_seed(0)
    from transformers import ViTForImageClassification

    config = tiny_vit_config()
    model = ViTForImageClassification(config).eval()
    # Random non-trivial weights everywhere (the default init leaves biases at zero).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(f32_exact(torch.randn_like(p, dtype=torch.float64) * 0.3).float())
    for name, shard in [("vit_tiny", "100MB"), ("vit_tiny_sharded", "4KB")]:
        path = os.path.join(OUT, name)
        shutil.rmtree(path, ignore_errors=True)
        model.save_pretrained(path, max_shard_size=shard)
    pixels = f32_exact(torch.randn(3, 3, 8, 8, dtype=torch.float64))
    with torch.no_grad():
        logits = model.double()(pixel_values=pixels).logits
    save_file({"pixel_values": pixels.float(), "logits": logits}, os.path.join(OUT, "vit_forward.safetensors"))


if __name__ == "__main__":
    main()
