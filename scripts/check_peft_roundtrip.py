"""LoRA files written by peft-wgpu load in PEFT: loads every adapter folder of
tests/fixtures/written_here/ (made by `cargo run --example write_lora_for_peft`) with PEFT on
the tiny ViT, checks that every tensor of the file reached the model, and compares PEFT's
logits (float64) with the ones peft-wgpu recorded beside the folders.

Cases, both under transformers 5 (PEFT's current pairing): lora_transformers5 (targets named
q_proj/v_proj) and lora_on_disk, configured with the on-disk names (query/value, a layer's
layernorm_after saved, a rank_pattern) and written by peft-wgpu in transformers 5's naming,
its config spelling the modules out; lora_saved_containers, whose modules_to_save names
modules that hold others (`embeddings`, `layers.1.mlp`), written with them spelled out;
lora_bias_all and lora_bias_lora_only, training biases of the model (PEFT's `bias`); lora_new_head, with a
saved head of 3 labels for the 5-label model (loaded by PEFT as a user starting a new task would:
the base model built for 3 labels, `ignore_mismatched_sizes`). Under transformers 4 with PEFT
0.17: lora_transformers4, configured with names of both namings and written in the on-disk one
(what `train` writes from a transformers-4 PEFT file, or under PEFT_WGPU_LORA_NAMING=transformers4). PEFT's own transformers-4 adapter
(tests/fixtures/adapters/lora_v4) is loaded under transformers 4 for its parameter counts only
(a directory with transformers 4 and PEFT < 0.18 installed by `pip install --target`, given by
PEFT_TF4_PATH, default /work/py-tf4, run in a subprocess with that directory first on
PYTHONPATH).

Writes tests/fixtures/peft_roundtrip.json: per case the versions, max |logit difference|,
max |logit|, how far the adapter moves the logits from the base model's, and PEFT's
`print_trainable_parameters` numbers and line; and those numbers for the LoRA adapters PEFT
itself wrote (tests/fixtures/adapters/lora_v5 under transformers 5, lora_v4 under 4). Run from
the repository root.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import torch

ROOT = "tests/fixtures/written_here"
MODEL = "tests/fixtures/vit_tiny"
OUT = "tests/fixtures/peft_roundtrip.json"
# folder: transformers major versions it is loaded under
CASES = {
    "lora_transformers5": [5],
    "lora_on_disk": [5],
    "lora_saved_containers": [5],
    "lora_bias_all": [5],
    "lora_bias_lora_only": [5],
    "lora_new_head": [5],
    "lora_transformers4": [4],
}
# With `bias` "all", PEFT's state dict holds a saved module's bias twice more (under
# `.modules_to_save.` and `.original_module.`), which it never loads; peft-wgpu writes
# the module's own bias only.
UNLOADED_COPIES = (".modules_to_save.bias", ".original_module.bias")
# LoRA adapters PEFT wrote (scripts/fixtures_adapters.py), for print_trainable_parameters only.
FIXTURES = {"lora_v5": "tests/fixtures/adapters/lora_v5", "lora_v4": "tests/fixtures/adapters/lora_v4"}
NOTE = (
    "lora_on_disk was configured with on-disk names (query, value); peft-wgpu writes a new LoRA adapter "
    "in transformers 5's naming with the modules spelled out, so PEFT under transformers 5 loads it; "
    "PEFT's own transformers-4 adapter tests/fixtures/adapters/lora_v4 fails there with "
    "NoMatchingPeftModuleError. lora_transformers4 is written in the on-disk naming, which PEFT 0.17 "
    "under transformers 4 loads."
)


def trainable_numbers(model):
    """PEFT's print_trainable_parameters line and its two numbers."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    return {"trainable_params": int(trainable), "all_params": int(total), "print_trainable_parameters": printed.getvalue().strip()}


def fixture_summary(folder):
    """PEFT's parameter counts for an adapter folder PEFT wrote itself (tests/fixtures/adapters)."""
    import peft
    import transformers
    from peft import PeftModel
    from transformers import ViTForImageClassification

    model = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(MODEL), folder, is_trainable=True)
    return {"folder": folder, "transformers": transformers.__version__, "peft": peft.__version__, **trainable_numbers(model)}


def run_case(name):
    """Loads ROOT/name with the transformers and PEFT importable here; returns a result dict."""
    import peft
    import transformers
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import ViTForImageClassification

    folder = os.path.join(ROOT, name)
    recorded = load_file(os.path.join(ROOT, "logits.safetensors"))
    pixels = recorded["pixel_values"].double()
    ours = recorded[name].double()

    with open(os.path.join(folder, "adapter_config.json")) as f:
        labels = json.load(f).get("num_labels")
    new_task = {"num_labels": labels, "ignore_mismatched_sizes": True} if labels else {}
    base = ViTForImageClassification.from_pretrained(MODEL).double().eval()
    with torch.no_grad():
        base_logits = base(pixel_values=pixels).logits.clone()
    model = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(MODEL, **new_task), folder, is_trainable=True)
    counts = trainable_numbers(model)

    # Every tensor of the file is in the model, unchanged: nothing was silently re-initialised.
    in_file = load_file(os.path.join(folder, "adapter_model.safetensors"))
    in_model = get_peft_model_state_dict(model)
    expected = sorted(k for k in in_model if not k.endswith(UNLOADED_COPIES))
    assert sorted(in_file) == expected, (sorted(in_file), sorted(in_model))
    for key, t in in_file.items():
        assert torch.equal(t, in_model[key].to(t.dtype)), key

    model = model.double().eval()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    return {
        "adapter": name,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
        "max_abs_diff": float((logits - ours).abs().max()),
        "max_abs_logit": float(logits.abs().max()),
        # With a new head, the change in the logits of the labels both heads have.
        "max_abs_change_from_base": float((logits[:, : base_logits.shape[1]] - base_logits[:, : logits.shape[1]]).abs().max()),
        **counts,
    }


def run_under_tf4(flag, arg):
    tf4 = os.environ.get("PEFT_TF4_PATH", "/work/py-tf4")
    env = dict(os.environ, PYTHONPATH=tf4 + os.pathsep + os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, __file__, flag, arg], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(run_case(sys.argv[2])))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        print(json.dumps(fixture_summary(sys.argv[2])))
        return
    import transformers

    assert transformers.__version__.startswith("5."), transformers.__version__
    results = []
    for name, majors in CASES.items():
        for major in majors:
            result = run_case(name) if major == 5 else run_under_tf4("--case", name)
            assert result["transformers"].startswith(f"{major}."), result
            results.append(result)
            print(f"{name} under transformers {result['transformers']}: max |diff| {result['max_abs_diff']:.3e}")
    summaries = [fixture_summary(FIXTURES["lora_v5"]), run_under_tf4("--summary", FIXTURES["lora_v4"])]
    report = {
        "about": "LoRA adapters written by peft-wgpu (tests/fixtures/written_here), loaded by PEFT; "
        "logits compared in float64 with peft-wgpu's (scripts/check_peft_roundtrip.py)",
        "note": NOTE,
        "cases": results,
        "fixture_summaries": summaries,
    }
    with open(OUT, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
