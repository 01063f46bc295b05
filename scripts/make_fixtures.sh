#!/usr/bin/env bash
# Regenerates every fixture under tests/fixtures/ (needs numpy, scipy, torch, safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" scripts/fixtures_dct.py
"$PY" scripts/fixtures_priors.py
