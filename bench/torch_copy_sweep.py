"""PyTorch's device-to-device copy of the MoPPA filter's bytes (x: [B, 14, 14, 768] f32) for
B from 16 to 1024, timed by CUDA events (`pytorch_baseline.timed`): the copy rate that
bench/README.md compares the filter and `examples/spectral_lab.rs`'s copy kernel with.

    python3 bench/torch_copy_sweep.py
"""

import torch

from pytorch_baseline import timed


def main():
    device = torch.device("cuda")
    for batch in [16, 64, 128, 256, 1024]:
        n = batch * 196 * 768
        x = torch.randn(n, device=device)
        y = torch.empty_like(x)
        _, _, ms = timed(device, lambda: y.copy_(x), warmup=3, repeats=21)
        print(f"torch copy batch {batch}: {ms * 1e3:.1f} us, {2 * 4 * n / ms / 1e6:.0f} GB/s")


if __name__ == "__main__":
    main()
