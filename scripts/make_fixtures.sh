#!/usr/bin/env bash
# Regenerates tests/fixtures/*.safetensors: runs every scripts/fixtures_*.py from the
# repository root with ${PYTHON:-python3} (it needs torch, numpy, scipy, safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
for script in scripts/fixtures_*.py; do
    echo "$script"
    "${PYTHON:-python3}" "$script"
done
