#!/usr/bin/env bash
# Regenerates every fixture under tests/fixtures/ (and data/digits.safetensors). Needs a
# Python with torch, numpy, scipy, safetensors, scikit-learn, transformers and peft.
# PEFT_TF4_PATH: optional directory with transformers<5 and peft<0.18 installed by
# `pip install --target`, for the LoRA fixture written under transformers 4's naming.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# PEFT writes target_modules from a Python set: fix the hash seed so files are reproducible.
export PYTHONHASHSEED=0
"$PYTHON" scripts/make_digits.py
# The tiny ViT comes first: other fixtures adapt it.
"$PYTHON" scripts/fixtures_vit.py
for script in scripts/fixtures_*.py; do
    [ "$script" = scripts/fixtures_vit.py ] && continue
    echo "== $script"
    "$PYTHON" "$script"
done
