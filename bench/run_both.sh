#!/usr/bin/env bash
# Runs `peft-wgpu bench --json` and bench/pytorch_baseline.py in turns, ROUNDS times (default
# 3), into $OUT (default bench/results/<date>), then prints the comparison table.
#   PYTHON=... ROUNDS=3 bench/run_both.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-bench/results/$(date +%Y-%m-%d)}"
"$PYTHON" -c "import torch" 2>/dev/null ||
    { echo "run_both.sh: $PYTHON cannot import torch; set PYTHON to a Python that has it" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release --quiet
for i in $(seq 1 "$ROUNDS"); do
    echo "== round $i, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    ./target/release/peft-wgpu bench --json > "$OUT/ours_$i.jsonl"
    "$PYTHON" bench/pytorch_baseline.py > "$OUT/torch_$i.jsonl"
done
"$PYTHON" bench/compare.py --ours "$OUT"/ours_*.jsonl --torch "$OUT"/torch_*.jsonl
