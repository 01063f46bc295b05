"""`--no-shuffle` SGD training fixtures (SPEC §11, §12): every adapter of tests/fixtures/adapters
is trained for a few SGD steps in float64 by PyTorch (LoRA by PEFT itself, loaded with
PeftModel.from_pretrained), with step t using rows (t*B + j) mod N and the MoPPA route term
decaying as SPEC §3 says. The Rust test runs `peft-wgpu train --init <adapter> --no-shuffle
--optimizer sgd` on the same data and compares the saved tensors.

Outputs: tests/fixtures/train_data.safetensors (pixel_values f32, labels i64) and
tests/fixtures/training_expected.safetensors with `<name>.loss` [steps] and `<name>.final.<key>`.
"""

import json
import os

import torch
from safetensors.torch import load_file, save_file

import torch_reference as ref
from fixtures_adapters import live_path

MODEL = "tests/fixtures/vit_tiny"
ADAPTERS = "tests/fixtures/adapters"
DATA = "tests/fixtures/train_data.safetensors"
EXPECTED = "tests/fixtures/training_expected.safetensors"
PREFIX = "base_model.model."
STEPS, BATCH, LR, ROWS = 3, 4, 0.05, 10


def data():
    g = torch.Generator().manual_seed(7)
    pixels = ref.f32_exact(torch.randn(ROWS, 3, 8, 8, generator=g, dtype=torch.float64))
    # Labels below 3 so the RLP adapter's 3-label head can train on them too.
    labels = torch.randint(0, 3, (ROWS,), generator=g)
    save_file({"pixel_values": pixels.float(), "labels": labels}, DATA)
    return pixels, labels


def base():
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(MODEL).double().eval()


def with_head(model, tensors, params):
    if f"{PREFIX}classifier.weight" in tensors:
        w, b = tensors[f"{PREFIX}classifier.weight"], tensors[f"{PREFIX}classifier.bias"]
        head = torch.nn.Linear(w.shape[1], w.shape[0]).double()
        head.weight, head.bias = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
        model.classifier = head
        params[f"{PREFIX}classifier.weight"], params[f"{PREFIX}classifier.bias"] = head.weight, head.bias


def load(name):
    path = os.path.join(ADAPTERS, name)
    config = json.load(open(os.path.join(path, "adapter_config.json")))
    tensors = {k: v.double() for k, v in load_file(os.path.join(path, "adapter_model.safetensors")).items()}
    return config, tensors


def flora():
    config, tensors = load("flora")
    model, params = base(), {}
    for key in [k for k in tensors if k.endswith(".flora_core")]:
        path = key[len(PREFIX) : -len(".flora_core")]
        mod = model.get_submodule(live_path(path))
        n = tensors[key].dim()
        factors = [tensors[f"{PREFIX}{path}.flora_factors.{i}"] for i in range(n)]
        cls = ref.FloraLinear if isinstance(mod, torch.nn.Linear) else ref.FloraConv
        wrapped = cls(mod, tensors[key].clone(), [f.clone() for f in factors], config["scale"])
        ref.set_module(model, live_path(path), wrapped)
        params[key] = wrapped.core
        for i, f in enumerate(wrapped.factors):
            params[f"{PREFIX}{path}.flora_factors.{i}"] = f
    with_head(model, tensors, params)
    return model, params, lambda step: 0.0, {}


def moppa():
    config, tensors = load("moppa")
    model, params = base(), {}
    layers = sorted({int(k.split(".")[5]) for k in tensors if ".layer." in k})
    raw = {f"k_{n}": tensors[f"{PREFIX}vit.encoder.moppa.k_{n}"].clone() for n in ["heat", "wave", "poisson"]}
    for l in layers:
        stem = f"{PREFIX}vit.encoder.layer.{l}.moppa"
        for n in ["heat", "wave", "poisson"]:
            raw[f"{l}.t_{n}"] = tensors[f"{stem}.t_{n}"].clone()
        raw[f"{l}.router_logits"] = tensors[f"{stem}.router_logits"].clone()
        raw[f"{l}.temperature"] = tensors[f"{stem}.temperature"].clone()
    shared, filters = ref.attach_moppa(model, raw, layers, 4, 4, prefix=1)
    for n in ["heat", "wave", "poisson"]:
        params[f"{PREFIX}vit.encoder.moppa.k_{n}"] = shared[n]
    for l, f in filters.items():
        stem = f"{PREFIX}vit.encoder.layer.{l}.moppa"
        for n in ["heat", "wave", "poisson"]:
            params[f"{stem}.t_{n}"] = f.t[n]
        params[f"{stem}.router_logits"], params[f"{stem}.temperature"] = f.logits, f.tau
    scale, decay = config["entropy_scale"], config["entropy_decay_fraction"]

    def route(step):
        lam = scale * max(0.0, 1.0 - step / (decay * STEPS))
        return -lam * sum(ref.route_entropy(f.logits, f.tau) for f in filters.values())

    return model, params, route, {}


def rlp():
    config, tensors = load("rlp")
    model, params = base(), {}
    emb = ref.attach_rlp(model, tensors["rlp.prompt_init"], tensors["rlp.A"].clone(), tensors["rlp.B"].clone(), config["scale"])
    params["rlp.A"], params["rlp.B"] = emb.a, emb.b
    with_head(model, tensors, params)
    return model, params, lambda step: 0.0, {"rlp.prompt_init": tensors["rlp.prompt_init"]}


def lora(name):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    path = os.path.join(ADAPTERS, name)
    model = ViTForImageClassification.from_pretrained(MODEL)
    model = PeftModel.from_pretrained(model, path, is_trainable=True).double()
    saved = load_file(os.path.join(path, "adapter_model.safetensors"))
    live = dict(model.named_parameters())
    saved_copies = {n.replace(".modules_to_save.default.", "."): p for n, p in live.items() if ".modules_to_save.default." in n}
    params = {}
    for key in saved:
        stem, _, leaf = key.rpartition(".")
        params[key] = live[f"{stem}.default.{leaf}"] if ".lora_" in stem else saved_copies[key]
    return model, params, lambda step: 0.0, {}


def train(name, build, pixels, labels, expected):
    model, params, route, frozen = build()
    losses = []
    for step in range(STEPS):
        rows = [(step * BATCH + j) % ROWS for j in range(BATCH)]
        logits = model(pixel_values=pixels[rows]).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[rows]) + route(step)
        for p in params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params.values():
                p -= LR * p.grad
        losses.append(loss.item())
    expected[f"{name}.loss"] = torch.tensor(losses, dtype=torch.float64)
    for key, p in params.items():
        expected[f"{name}.final.{key}"] = p.detach().clone()
    for key, t in frozen.items():
        expected[f"{name}.final.{key}"] = t


def main():
    torch.manual_seed(0)
    pixels, labels = data()
    expected = {}
    train("flora", flora, pixels, labels, expected)
    train("moppa", moppa, pixels, labels, expected)
    train("rlp", rlp, pixels, labels, expected)
    train("lora_v5", lambda: lora("lora_v5"), pixels, labels, expected)
    train("lora_saved_containers", lambda: lora("lora_saved_containers"), pixels, labels, expected)
    expected["steps"] = torch.tensor([STEPS, BATCH])
    expected["lr"] = torch.tensor([LR], dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in expected.items()}, EXPECTED)


if __name__ == "__main__":
    main()
