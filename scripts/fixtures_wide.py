"""Fixtures on an oblong ViT: 8×12 images cut into 2×4 patches, so the token grid is 4×3
(gh ≠ gw) and the patch-embedding conv has a 2×4 kernel. Covers what the square tiny ViT
cannot: MoPPA's K of shape [gh, gw, heads] with gh ≠ gw, FLoRA's four conv modes with
kh ≠ kw, and PEFT's LoRA conv on an oblong kernel.

Outputs: tests/fixtures/vit_wide/ (config.json, model.safetensors, written by transformers),
tests/fixtures/wide/<name>/ (adapter folders: moppa, flora, lora) and
tests/fixtures/wide_expected.safetensors with `pixel_values`, `labels`, `vit.logits` and,
per adapter, `<name>.logits`, `<name>.loss`, `<name>.grad.<file key>` (float64).
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

import torch_reference as ref
from fixtures_adapters import PREFIX, live_path, rand, record

MODEL = "tests/fixtures/vit_wide"
OUT = "tests/fixtures/wide"
EXPECTED = "tests/fixtures/wide_expected.safetensors"
GRID = (4, 3)


def make_model():
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ref.tiny_vit_config(image_size=[8, 12], patch_size=[2, 4])).eval()
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
    pixels = ref.f32_exact(torch.randn(3, 3, 8, 12, generator=g, dtype=torch.float64))
    return pixels, torch.tensor([2, 0, 4])


def write_adapter(name, config, tensors):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, os.path.join(path, "adapter_model.safetensors"))


def moppa(expected):
    g = torch.Generator().manual_seed(12)
    model = load_model()
    heads, d = 2, 8
    gh, gw = GRID
    layers = [0, 1]
    raw = {f"k_{n}": ref.f32_exact(1.0 + rand([gh, gw, heads], 0.3, g)) for n in ["heat", "wave", "poisson"]}
    for l in layers:
        raw[f"{l}.t_heat"] = rand([d], 0.3, g)
        raw[f"{l}.t_wave"] = rand([d], 0.3, g)
        raw[f"{l}.t_poisson"] = ref.f32_exact(0.5 + rand([d], 0.2, g))
        raw[f"{l}.router_logits"] = rand([3, heads], 1.0, g)
        raw[f"{l}.temperature"] = ref.f32_exact(5.0 + rand([heads], 0.5, g))
    shared, filters = ref.attach_moppa(model, raw, layers, gh, gw, prefix=1)
    params = {f"{PREFIX}vit.encoder.moppa.k_{n}": shared[n] for n in ["heat", "wave", "poisson"]}
    for l, f in filters.items():
        stem = f"{PREFIX}vit.encoder.layer.{l}.moppa"
        for n in ["heat", "wave", "poisson"]:
            params[f"{stem}.t_{n}"] = f.t[n]
        params[f"{stem}.router_logits"] = f.logits
        params[f"{stem}.temperature"] = f.tau
    entropy_scale = 0.2
    write_adapter("moppa", {"peft_type": "MOPPA", "entropy_scale": entropy_scale}, params)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    entropy = sum(ref.route_entropy(f.logits, f.tau) for f in filters.values())
    loss = torch.nn.functional.cross_entropy(logits, labels) - entropy_scale * entropy
    record(expected, "moppa", logits, loss, params)


def flora(expected):
    g = torch.Generator().manual_seed(13)
    model = load_model()
    targets = {
        "vit.embeddings.patch_embeddings.projection": ref.FloraConv,
        "vit.encoder.layer.1.attention.attention.query": ref.FloraLinear,
    }
    scale, r = 0.6, 3
    params = {}
    for path, cls in targets.items():
        base = model.get_submodule(live_path(path))
        dims = list(base.weight.shape)
        ranks = [min(r, n) for n in dims]
        core = rand(ranks, 0.5, g)
        factors = [rand([n, k], (1 / (2 * k)) ** 0.5, g) for n, k in zip(dims, ranks)]
        mod = cls(base, core, factors, scale)
        ref.set_module(model, live_path(path), mod)
        params[f"{PREFIX}{path}.flora_core"] = mod.core
        for i, f in enumerate(mod.factors):
            params[f"{PREFIX}{path}.flora_factors.{i}"] = f
    config = {"peft_type": "FLORA", "r": r, "scale": scale, "target_modules": ["projection", "1.attention.attention.query"]}
    write_adapter("flora", config, params)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    record(expected, "flora", logits, torch.nn.functional.cross_entropy(logits, labels), params)


def lora(expected):
    """PEFT's LoRA on the 2×4 patch conv and on a linear layer, random A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    g = torch.Generator().manual_seed(14)
    model = ViTForImageClassification.from_pretrained(MODEL).eval()
    config = LoraConfig(r=3, lora_alpha=5, target_modules=["projection", "k_proj"], lora_dropout=0.0)
    model = get_peft_model(model, config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(rand(p.shape, 0.3, g).float())
    path = os.path.join(OUT, "lora")
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    model = model.double()
    live = dict(model.named_parameters())
    params = {}
    for key in load_file(os.path.join(path, "adapter_model.safetensors")):
        stem, _, leaf = key.rpartition(".")
        params[key] = live[f"{stem}.default.{leaf}"]
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    record(expected, "lora", logits, torch.nn.functional.cross_entropy(logits, labels), params)


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
