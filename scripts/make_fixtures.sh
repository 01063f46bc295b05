#!/usr/bin/env bash
# Regenerates every fixture under tests/fixtures/. Needs torch, numpy, safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" scripts/fixtures_conv.py
