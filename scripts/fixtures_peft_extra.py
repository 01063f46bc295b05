"""LoRA adapters PEFT writes with options the main fixtures do not use, on the tiny ViT of
tests/fixtures/vit_tiny, with PEFT's logits, loss and gradients (float64):

- lora_exclude: `target_modules="all-linear"` with `exclude_modules=["output.dense"]` under
  transformers 5, where no module is named `output.dense`, so PEFT excludes nothing.
- lora_all_linear: `target_modules="all-linear"` alone.
- lora_embedding: saved with `save_embedding_layers=True`, the model's patch embedding
  (its input embedding) moved first, so the file's copy differs from the base model's and
  PEFT loads it over the base.

Outputs: tests/fixtures/peft_extra/<name>/ and tests/fixtures/peft_extra_expected.safetensors
(`<name>.logits`, `<name>.loss`, `<name>.grad.<file key>`, `pixel_values`, `labels`).
"""

import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from fixtures_adapters import MODEL, inputs, rand, record

OUT = "tests/fixtures/peft_extra"
EXPECTED = "tests/fixtures/peft_extra_expected.safetensors"


def case(expected, name, seed, save_options=None, move_embedding=False, **options):
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    g = torch.Generator().manual_seed(seed)
    model = ViTForImageClassification.from_pretrained(MODEL).eval()
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, **options))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(rand(p.shape, 0.3, g).float())
        if move_embedding:
            proj = model.get_input_embeddings().projection
            proj.weight.add_(rand(proj.weight.shape, 0.3, g).float())
            proj.bias.add_(rand(proj.bias.shape, 0.3, g).float())
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, **(save_options or {}))
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    model = model.double()
    live = dict(model.named_parameters())
    params = {}
    for key in load_file(os.path.join(path, "adapter_model.safetensors")):
        stem, _, leaf = key.rpartition(".")
        if f"{stem}.default.{leaf}" in live:  # the embedding is stored, not trained
            params[key] = live[f"{stem}.default.{leaf}"]
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    record(expected, name, logits, torch.nn.functional.cross_entropy(logits, labels), params)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    case(expected, "lora_exclude", 21, target_modules="all-linear", exclude_modules=["output.dense"])
    case(expected, "lora_all_linear", 22, target_modules="all-linear")
    case(expected, "lora_embedding", 23, {"save_embedding_layers": True}, True, target_modules=["q_proj"])
    pixels, labels = inputs()
    expected["pixel_values"] = pixels.float()
    expected["labels"] = labels
    save_file({k: v.contiguous() for k, v in expected.items()}, EXPECTED)


if __name__ == "__main__":
    main()
