"""Compares `peft-wgpu bench --json` with `bench/pytorch_baseline.py` as a Markdown table.

    python bench/compare.py --ours ours*.jsonl --torch torch*.jsonl

Each file holds one JSON object per line (`{"name", "ms", ...}`). With several files per
side (runs taken in turns, to spread the machine's load evenly), each workload's time is
the median over the files. The ratio is peft-wgpu's time over PyTorch's (below 1: faster).
`--clock gpu` compares device times instead of wall times (`gpu_ms`: GPU timestamps on our
side, CUDA events on PyTorch's; only where both sides have them).
"""

import argparse
import math
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


def rate(r, prefix):
    if prefix + "gflops" in r:
        return f"{r[prefix + 'gflops']:.1f} GFLOP/s"
    if prefix + "gbps" in r:
        return f"{r[prefix + 'gbps']:.2f} GB/s"
    return ""


def ms(t):
    """Milliseconds to three significant digits (at least one decimal)."""
    return f"{t:.{max(1, 2 - math.floor(math.log10(t)))}f}" if t > 0 else f"{t}"


def mib(r):
    return f"{r['peak_bytes'] / 2**20:.1f}" if r.get("peak_bytes") is not None else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", nargs="+", required=True)
    ap.add_argument("--torch", nargs="+", required=True)
    ap.add_argument("--clock", choices=["wall", "gpu"], default="wall")
    args = ap.parse_args()
    prefix = "gpu_" if args.clock == "gpu" else ""
    key = prefix + "ms"
    ours, torch = load(args.ours), load(args.torch)
    ours = {n: [r for r in rs if key in r] for n, rs in ours.items()}
    torch = {n: [r for r in rs if key in r] for n, rs in torch.items()}
    ours = {n: rs for n, rs in ours.items() if rs}
    torch = {n: rs for n, rs in torch.items() if rs}
    print(f"| workload | peft-wgpu {key} | PyTorch {key} | ratio | peft-wgpu rate | PyTorch rate | peft-wgpu peak MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ORDER + sorted(set(ours) - set(ORDER)):
        if name not in ours:
            continue
        o = statistics.median(r[key] for r in ours[name])
        best_o = min(ours[name], key=lambda r: abs(r[key] - o))
        if name in torch:
            t = statistics.median(r[key] for r in torch[name])
            best_t = min(torch[name], key=lambda r: abs(r[key] - t))
            cols = [ms(t), f"{o / t:.2f}×", rate(best_t, prefix)]
        else:
            cols = ["–", "–", ""]
        print(f"| `{name}` | {ms(o)} | {cols[0]} | {cols[1]} | {rate(best_o, prefix)} | {cols[2]} | {mib(best_o)} |")


if __name__ == "__main__":
    main()
