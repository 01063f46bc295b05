"""Adapter fixtures: for every adapter type, an adapter folder on the tiny ViT of
tests/fixtures/vit_tiny with random non-zero parameters, and the logits, cross-entropy and
gradients of every trainable parameter, computed in float64 by PyTorch (LoRA: by PEFT itself,
once under transformers 5 and once under transformers 4 for the two module namings). MoPPA
has three more cases: a subset of layers, router heads other than the model's attention heads,
and `layers` listed out of order.

Run from the repository root (make_fixtures.sh does). The transformers-4 half runs when
PEFT_TF4_PATH points at a directory holding transformers<5 and peft<0.18 (pip install
--target); without it the committed lora_v4 fixture is left as it is.

Outputs: tests/fixtures/adapters/<name>/{adapter_config.json, adapter_model.safetensors}
and tests/fixtures/adapters_expected.safetensors with, per <name>: `<name>.logits`,
`<name>.loss` and `<name>.grad.<file key>` for every trainable tensor.
"""

import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

import torch_reference as ref

MODEL = "tests/fixtures/vit_tiny"
OUT = "tests/fixtures/adapters"
EXPECTED = "tests/fixtures/adapters_expected.safetensors"
PREFIX = "base_model.model."


def inputs():
    g = torch.Generator().manual_seed(1)
    pixels = ref.f32_exact(torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64))
    labels = torch.tensor([1, 4, 0])
    return pixels, labels


def rand(shape, std, g):
    return ref.f32_exact(torch.randn(*shape, generator=g, dtype=torch.float64) * std)


def load_model():
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(MODEL).double().eval()


def write_adapter(name, config, tensors, out=OUT):
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, os.path.join(path, "adapter_model.safetensors"))


def record(expected, name, logits, loss, named_params):
    loss.backward()
    expected[f"{name}.logits"] = logits.detach()
    expected[f"{name}.loss"] = loss.detach().reshape(1)
    for key, p in named_params.items():
        expected[f"{name}.grad.{key}"] = p.grad.detach().clone()


def classifier_copy(model, g, labels_out=None):
    """A trainable saved copy of the classifier, perturbed; or a new head of `labels_out`
    labels (random here, as after some training, so gradients reach the prompts)."""
    w, b = model.classifier.weight, model.classifier.bias
    if labels_out is None:
        nw = torch.nn.Parameter(w.detach() + rand(w.shape, 0.1, g))
        nb = torch.nn.Parameter(b.detach() + rand(b.shape, 0.1, g))
    else:
        nw = torch.nn.Parameter(rand([labels_out, w.shape[1]], 0.5, g))
        nb = torch.nn.Parameter(rand([labels_out], 0.5, g))
    head = torch.nn.Linear(w.shape[1], nw.shape[0]).double()
    head.weight, head.bias = nw, nb
    model.classifier = head
    return {f"{PREFIX}classifier.weight": nw, f"{PREFIX}classifier.bias": nb}


def live_path(path):
    """The transformers-5 module path of an on-disk path (files use the on-disk naming)."""
    import re

    m = re.fullmatch(r"vit\.encoder\.layer\.(\d+)\.(.*)", path)
    if not m:
        return path
    table = {
        "attention.attention.query": "attention.q_proj",
        "attention.attention.key": "attention.k_proj",
        "attention.attention.value": "attention.v_proj",
        "attention.output.dense": "attention.o_proj",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
    }
    return f"vit.layers.{m.group(1)}.{table.get(m.group(2), m.group(2))}"


def attach_flora(model, targets, r, scale, g):
    """FLoRA on each `path: kind` ("linear" or "conv") of `targets` with a random core and
    factors (ranks min(r, d_i)); returns the trainable tensors by file key."""
    params = {}
    for path, kind in targets.items():
        base = model.get_submodule(live_path(path))
        dims = list(base.weight.shape)
        ranks = [min(r, d) for d in dims]
        core = rand(ranks, 0.5, g)
        factors = [rand([d, k], (1 / (2 * k)) ** 0.5, g) for d, k in zip(dims, ranks)]
        cls = ref.FloraLinear if kind == "linear" else ref.FloraConv
        mod = cls(base, core, factors, scale)
        ref.set_module(model, live_path(path), mod)
        params[f"{PREFIX}{path}.flora_core"] = mod.core
        for i, f in enumerate(mod.factors):
            params[f"{PREFIX}{path}.flora_factors.{i}"] = f
    return params


def flora(expected):
    g = torch.Generator().manual_seed(2)
    model = load_model()
    targets = {
        "vit.encoder.layer.0.attention.attention.query": "linear",
        "vit.encoder.layer.1.attention.attention.value": "linear",
        "vit.encoder.layer.1.intermediate.dense": "linear",
        "vit.embeddings.patch_embeddings.projection": "conv",
    }
    scale, r = 0.7, 3
    params = attach_flora(model, targets, r, scale, g)
    params.update(classifier_copy(model, g))
    config = {
        "peft_type": "FLORA",
        "r": r,
        "scale": scale,
        "target_modules": ["0.attention.attention.query", "layer.1.attention.attention.value", "1.intermediate.dense", "projection"],
        "modules_to_save": ["classifier"],
    }
    write_adapter("flora", config, params)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(logits, labels)
    record(expected, "flora", logits, loss, params)


def attach_random_moppa(model, g, grid, heads, d, layers):
    """MoPPA on `layers` of a `grid` token grid with random K near 1, times of both signs (so
    ReLU's zero region is exercised), router logits and temperatures; returns the trainable
    tensors by file key and the filters."""
    gh, gw = grid
    raw = {}
    for n in ["heat", "wave", "poisson"]:
        raw[f"k_{n}"] = ref.f32_exact(1.0 + rand([gh, gw, heads], 0.3, g))
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
    return params, filters


def moppa_case(expected, name, seed, heads, layers, entropy_scale, options=None):
    """MoPPA on `layers` of the tiny ViT (hidden 16, 2 attention heads) with `heads` router
    heads of 16 / heads channels; `options` (`num_heads`, `layers`) go into the config as
    given. The loss is that of step 0 of training, where lambda_0 = entropy_scale."""
    g = torch.Generator().manual_seed(seed)
    model = load_model()
    params, filters = attach_random_moppa(model, g, (4, 4), heads, 16 // heads, layers)
    config = {"peft_type": "MOPPA", "entropy_scale": entropy_scale, "entropy_decay_fraction": 0.5, "modules_to_save": None}
    config.update(options or {})
    write_adapter(name, config, params)
    pixels, labels = inputs()
    logits = model(pixel_values=pixels).logits
    entropy = sum(ref.route_entropy(f.logits, f.tau) for f in filters.values())
    loss = torch.nn.functional.cross_entropy(logits, labels) - entropy_scale * entropy
    record(expected, name, logits, loss, params)


def moppa(expected):
    moppa_case(expected, "moppa", 3, 2, [0, 1], 0.3)


def moppa_layers_and_heads(expected):
    """MoPPA where a per-layer tensor's layer id is not its position in `layers`, and with
    router heads other than the model's attention heads:
    - moppa_layer1: layer 1 only (layer 0 has no filter), the model's 2 heads;
    - moppa_heads4: every layer, num_heads 4 (d = 4);
    - moppa_heads1_layers10: `layers: [1, 0]` (listed out of order), num_heads 1 (d = 16)."""
    moppa_case(expected, "moppa_layer1", 31, 2, [1], 0.3, {"layers": [1]})
    moppa_case(expected, "moppa_heads4", 32, 4, [0, 1], 0.4, {"num_heads": 4})
    moppa_case(expected, "moppa_heads1_layers10", 33, 1, [1, 0], 0.25, {"num_heads": 1, "layers": [1, 0]})


def rlp(expected):
    g = torch.Generator().manual_seed(4)
    model = load_model()
    n, r, dim, scale = 3, 2, 16, 0.5
    p0, a, b = rand([n, dim], 0.02, g), rand([n, r], (1 / r) ** 0.5, g), rand([r, dim], 0.3, g)
    emb = ref.attach_rlp(model, p0, a, b, scale)
    params = {"rlp.A": emb.a, "rlp.B": emb.b}
    # A new task with 3 labels: the adapter's head replaces the base model's 5-label head.
    params.update(classifier_copy(model, g, labels_out=3))
    tensors = {k: v.detach() for k, v in params.items()}
    tensors["rlp.prompt_init"] = p0
    config = {"peft_type": "RLP", "num_prompt_tokens": n, "r": r, "scale": scale, "modules_to_save": ["classifier"], "num_labels": 3}
    write_adapter("rlp", config, tensors)
    pixels, labels = inputs()
    labels = labels % 3
    logits = model(pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(logits, labels)
    record(expected, "rlp", logits, loss, params)
    expected["rlp.prompt_embeddings"] = emb.prompts().detach()


def peft_lora(expected, name, config, seed, out=OUT, model_dir=MODEL, data=inputs, save_options=None, prepare=None):
    """LoRA through PEFT itself on the model of `model_dir` with `config` (a LoraConfig): every
    trainable tensor (A, B, saved modules) drawn from N(0, 0.3²) with `seed`, then
    `prepare(model, g)` if given, saved to `out/name` with `save_options`; records PEFT's
    logits, loss and the gradient of every trained tensor of the file on `data()`."""
    from peft import get_peft_model
    from transformers import ViTForImageClassification

    g = torch.Generator().manual_seed(seed)
    model = get_peft_model(ViTForImageClassification.from_pretrained(model_dir).eval(), config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(rand(p.shape, 0.3, g).float())
        if prepare is not None:
            prepare(model, g)
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, **(save_options or {}))
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    model = model.double()
    # Map file keys to live parameters: PEFT inserts the adapter name into the live names.
    live = dict(model.named_parameters())
    # A saved module's copy lives under `<module>.modules_to_save.default`, tensors inside it
    # (those of a saved container such as `mlp`) further down.
    saved_copies = {n.replace(".modules_to_save.default.", "."): p for n, p in live.items() if ".modules_to_save.default." in n}
    params = {}
    for key in load_file(os.path.join(path, "adapter_model.safetensors")):
        stem, _, leaf = key.rpartition(".")
        if ".modules_to_save." in f"{stem}." or ".original_module." in f"{stem}.":
            # With `bias` "all", PEFT stores the biases inside a saved module twice more (under
            # the module or, for a container, under its wrapper); it loads neither.
            assert leaf == "bias", key
        elif f"{stem}.default.{leaf}" in live:
            params[key] = live[f"{stem}.default.{leaf}"]
        elif key in saved_copies:
            params[key] = saved_copies[key]
        elif live.get(f"{stem}.{leaf}") is not None and live[f"{stem}.{leaf}"].requires_grad:
            params[key] = live[f"{stem}.{leaf}"]  # a base bias trained with `bias` "all" or "lora_only"
        else:  # a base layer PEFT stores untrained (save_embedding_layers)
            assert f"{stem}.{leaf}" in live, key
    pixels, labels = data()
    logits = model(pixel_values=pixels).logits
    record(expected, name, logits, torch.nn.functional.cross_entropy(logits, labels), params)


def lora_with_peft(expected, name, targets):
    """LoRA through PEFT itself: random A and B, saved classifier."""
    from peft import LoraConfig

    config = LoraConfig(r=4, lora_alpha=6, target_modules=targets, modules_to_save=["classifier"], lora_dropout=0.0)
    peft_lora(expected, name, config, 5)


def lora_saved_containers(expected):
    """LoRA through PEFT whose `modules_to_save` names modules that hold others: every `mlp`
    (fc1 and fc2) and `vit.embeddings` (its own `cls_token` and `position_embeddings`, and
    the patch embedding), trained in full beside the classifier."""
    from peft import LoraConfig

    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "fc1"], modules_to_save=["classifier", "mlp", "vit.embeddings"]
    )
    peft_lora(expected, "lora_saved_containers", config, 11)


def lora_v4_subprocess():
    tf4 = os.environ.get("PEFT_TF4_PATH")
    if not tf4:
        print("PEFT_TF4_PATH unset: keeping the committed lora_v4 fixture", file=sys.stderr)
        return None
    env = dict(os.environ, PYTHONPATH=tf4 + os.pathsep + os.path.dirname(__file__))
    tmp = EXPECTED + ".v4"
    subprocess.run([sys.executable, __file__, "--lora-v4", tmp], check=True, env=env)
    out = load_file(tmp)
    os.remove(tmp)
    return out


def main():
    torch.manual_seed(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--lora-v4":
        import transformers

        assert transformers.__version__.startswith("4."), transformers.__version__
        expected = {}
        lora_with_peft(expected, "lora_v4", ["query", "value", "dense"])
        save_file(expected, sys.argv[2])
        return
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    flora(expected)
    moppa(expected)
    rlp(expected)
    lora_with_peft(expected, "lora_v5", ["q_proj", "v_proj", "fc1", "o_proj"])
    moppa_layers_and_heads(expected)
    lora_saved_containers(expected)
    v4 = lora_v4_subprocess()
    if v4 is None and os.path.exists(EXPECTED):
        v4 = {k: v for k, v in load_file(EXPECTED).items() if k.startswith("lora_v4.")}
    expected.update(v4 or {})
    pixels, labels = inputs()
    expected["pixel_values"] = pixels.float()
    expected["labels"] = labels
    save_file({k: v.contiguous() for k, v in expected.items()}, EXPECTED)


if __name__ == "__main__":
    main()
