"""Compares `peft-wgpu bench --json` with `bench/pytorch_baseline.py` as a Markdown table.

    python bench/compare.py --ours ours*.jsonl --torch torch*.jsonl

Each file holds one JSON object per line (`{"name", "ms", ...}`). With several files per
side (runs taken in turns, to spread the machine's load evenly), each workload's time is
the median over the files. The ratio is peft-wgpu's time over PyTorch's (below 1: faster).
"""

import argparse
import json
import statistics

ORDER = [
    "matmul_1024",
    "spectral_filter_64x14x14x768",
    "vitb_block_lora_train_step_b8",
    "vitb_block_moppa_train_step_b8",
    "vitb_block_full_train_step_b8",
    "tiny_vit_train_step_b64",
]


def load(paths):
    runs = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    r = json.loads(line)
                    runs.setdefault(r["name"], []).append(r)
    return runs


def rate(r):
    if "gflops" in r:
        return f"{r['gflops']:.1f} GFLOP/s"
    if "gbps" in r:
        return f"{r['gbps']:.2f} GB/s"
    return ""


def mib(r):
    return f"{r['peak_bytes'] / 2**20:.1f}" if r.get("peak_bytes") is not None else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", nargs="+", required=True)
    ap.add_argument("--torch", nargs="+", required=True)
    args = ap.parse_args()
    ours, torch = load(args.ours), load(args.torch)
    print("| workload | peft-wgpu ms | PyTorch ms | ratio | peft-wgpu rate | PyTorch rate | peft-wgpu peak MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ORDER + sorted(set(ours) - set(ORDER)):
        if name not in ours:
            continue
        o = statistics.median(r["ms"] for r in ours[name])
        best_o = min(ours[name], key=lambda r: abs(r["ms"] - o))
        if name in torch:
            t = statistics.median(r["ms"] for r in torch[name])
            best_t = min(torch[name], key=lambda r: abs(r["ms"] - t))
            cols = [f"{t:.1f}", f"{o / t:.2f}×", rate(best_t)]
        else:
            cols = ["–", "–", ""]
        print(f"| `{name}` | {o:.1f} | {cols[0]} | {cols[1]} | {rate(best_o)} | {cols[2]} | {mib(best_o)} |")


if __name__ == "__main__":
    main()
