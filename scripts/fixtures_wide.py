"""Fixtures on an oblong ViT: 9×14 images cut into 2×4 patches, so the token grid is 4×3
(gh ≠ gw), the patch-embedding conv has a 2×4 kernel, and the conv drops the last pixel row
and the last two pixel columns (no patch covers them). Covers what the square tiny ViT
cannot: MoPPA's K of shape [gh, gw, heads] with gh ≠ gw, FLoRA's four conv modes with
kh ≠ kw, and PEFT's LoRA conv on an oblong kernel.

Outputs: tests/fixtures/vit_wide/ (config.json, model.safetensors, written by transformers),
tests/fixtures/wide/<name>/ (adapter folders: moppa, flora, lora) and
tests/fixtures/wide_expected.safetensors with `pixel_values`, `labels`, `vit.logits` and,
per adapter, `<name>.logits`, `<name>.loss`, `<name>.grad.<file key>` (float64).
"""

import os
import shutil

import torch
from safetensors.torch import save_file

import torch_reference as ref
from fixtures_adapters import attach_flora, attach_random_moppa, peft_lora, record, write_adapter

MODEL = "tests/fixtures/vit_wide"
OUT = "tests/fixtures/wide"
EXPECTED = "tests/fixtures/wide_expected.safetensors"
GRID = (4, 3)


def make_model():
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ref.tiny_vit_config(image_size=[9, 14], patch_size=[2, 4])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(ref.f32_exact(torch.randn_like(p, dtype=torch.float64) * 0.3).float())
    shutil.rmtree(MODEL, ignore_errors=True)
    model.save_pretrained(MODEL)


def load_model():
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(MODEL).double().eval()


def inputs():
    g = torch.Generator().manual_seed(11)
    pixels = ref.f32_exact(torch.randn(3, 3, 9, 14, generator=g, dtype=torch.float64))
    return pixels, torch.tensor([2, 0, 4])


def moppa(expected):
    g = torch.Generator().manual_seed(12)
    model = load_model()
    params, filters = attach_random_moppa(model, g, GRID, 2, 8, [0, 1])
    entropy_scale = 0.2
    write_adapter("moppa", {"peft_type": "MOPPA", "entropy_scale": entropy_scale}, params, OUT)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    entropy = sum(ref.route_entropy(f.logits, f.tau) for f in filters.values())
    loss = torch.nn.functional.cross_entropy(logits, labels) - entropy_scale * entropy
    record(expected, "moppa", logits, loss, params)


def flora(expected):
    g = torch.Generator().manual_seed(13)
    model = load_model()
    targets = {
        "vit.embeddings.patch_embeddings.projection": "conv",
        "vit.encoder.layer.1.attention.attention.query": "linear",
    }
    scale, r = 0.6, 3
    params = attach_flora(model, targets, r, scale, g)
    config = {"peft_type": "FLORA", "r": r, "scale": scale, "target_modules": ["projection", "1.attention.attention.query"]}
    write_adapter("flora", config, params, OUT)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    record(expected, "flora", logits, torch.nn.functional.cross_entropy(logits, labels), params)


def lora(expected):
    """PEFT's LoRA on the 2×4 patch conv and on a linear layer, random A and B."""
    from peft import LoraConfig

    config = LoraConfig(r=3, lora_alpha=5, target_modules=["projection", "k_proj"], lora_dropout=0.0)
    peft_lora(expected, "lora", config, 14, out=OUT, model_dir=MODEL, data=inputs)


def main():
    make_model()
    os.makedirs(OUT, exist_ok=True)
    pixels, labels = inputs()
    expected = {"pixel_values": pixels.float(), "labels": labels}
    with torch.no_grad():
        expected["vit.logits"] = load_model()(pixel_values=pixels).logits
    moppa(expected)
    flora(expected)
    lora(expected)
    save_file({k: v.contiguous() for k, v in expected.items()}, EXPECTED)


if __name__ == "__main__":
    main()
