"""LoRA adapters PEFT writes with options the main fixtures do not use, on the tiny ViT of
tests/fixtures/vit_tiny, with PEFT's logits, loss and gradients (float64):

- lora_exclude: `target_modules="all-linear"` with `exclude_modules=["output.dense"]` under
  transformers 5, where no module is named `output.dense`, so PEFT excludes nothing.
- lora_all_linear: `target_modules="all-linear"` alone.
- lora_embedding: saved with `save_embedding_layers=True`, the model's patch embedding
  (its input embedding) moved first, so the file's copy differs from the base model's and
  PEFT loads it over the base.
- lora_output_entry: `modules_to_save=["classifier", "output"]` with `o_proj` and `fc1`
  targets under transformers 5, where no module is named `output` (transformers 4's
  `attention.output` and `output` hold o_proj and fc2): PEFT saves the classifier only and
  adapts o_proj and fc1.
- lora_bias_all: `bias="all"` with LoRA on q_proj, fc1 and the patch embedding and a saved
  classifier: every other bias of the model trains too, stored as `<m>.bias` (a LoRA
  module's as `<m>.base_layer.bias`), with the classifier's stored twice more.
- lora_bias_lora_only: `bias="lora_only"`: the biases of the LoRA modules train.
- lora_bias_all_container: `bias="all"` with `modules_to_save=["classifier", "layers.1.mlp"]`,
  whose biases PEFT also stores as `mlp.modules_to_save.default.fc1.bias` and
  `mlp.original_module.fc1.bias`.
- lora_bias_all_embedding: `bias="all"` saved with `save_embedding_layers=True` (the patch
  embedding moved first): the embedding's weight is loaded frozen, its bias trains.

Outputs: tests/fixtures/peft_extra/<name>/ and tests/fixtures/peft_extra_expected.safetensors
(`<name>.logits`, `<name>.loss`, `<name>.grad.<file key>`, `<name>.counts` = PEFT's trainable
and all parameters of the folder loaded for training, `pixel_values`, `labels`).
"""

import os

from safetensors.torch import save_file

from fixtures_adapters import MODEL, inputs, peft_lora, rand

OUT = "tests/fixtures/peft_extra"
EXPECTED = "tests/fixtures/peft_extra_expected.safetensors"


def move_embedding(model, g):
    proj = model.get_input_embeddings().projection
    proj.weight.add_(rand(proj.weight.shape, 0.3, g).float())
    proj.bias.add_(rand(proj.bias.shape, 0.3, g).float())


def case(expected, name, seed, save_options=None, prepare=None, **options):
    from peft import LoraConfig

    import torch
    from peft import PeftModel
    from transformers import ViTForImageClassification

    config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, **options)
    peft_lora(expected, name, config, seed, out=OUT, save_options=save_options, prepare=prepare)
    base = ViTForImageClassification.from_pretrained(MODEL)
    loaded = PeftModel.from_pretrained(base, os.path.join(OUT, name), is_trainable=True)
    expected[f"{name}.counts"] = torch.tensor(loaded.get_nb_trainable_parameters(), dtype=torch.int64)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    case(expected, "lora_exclude", 21, target_modules="all-linear", exclude_modules=["output.dense"])
    case(expected, "lora_all_linear", 22, target_modules="all-linear")
    case(expected, "lora_embedding", 23, {"save_embedding_layers": True}, move_embedding, target_modules=["q_proj"])
    case(expected, "lora_output_entry", 24, target_modules=["o_proj", "fc1"], modules_to_save=["classifier", "output"])
    targets = ["q_proj", "fc1", "projection"]
    case(expected, "lora_bias_all", 25, target_modules=targets, bias="all", modules_to_save=["classifier"])
    case(expected, "lora_bias_lora_only", 26, target_modules=["q_proj", "v_proj", "projection"], bias="lora_only")
    saved = ["classifier", "layers.1.mlp"]
    case(expected, "lora_bias_all_container", 27, target_modules=["q_proj"], bias="all", modules_to_save=saved)
    embedding = {"save_embedding_layers": True}
    case(expected, "lora_bias_all_embedding", 28, embedding, move_embedding, target_modules=["q_proj"], bias="all")
    pixels, labels = inputs()
    expected["pixel_values"] = pixels.float()
    expected["labels"] = labels
    save_file({k: v.contiguous() for k, v in expected.items()}, EXPECTED)


if __name__ == "__main__":
    main()
