"""PyTorch's device-to-device copy of the MoPPA filter's bytes (x: [B, 14, 14, 768] f32) for
B from 16 to 1024, timed by CUDA events: the copy ceiling that bench/README.md compares the
filter and `examples/spectral_lab.rs`'s copy kernel with.

    python3 bench/torch_copy_sweep.py
"""

import torch


def main():
    for batch in [16, 64, 128, 256, 1024]:
        n = batch * 196 * 768
        x = torch.randn(n, device="cuda")
        y = torch.empty_like(x)
        for _ in range(3):
            y.copy_(x)
        times = []
        for _ in range(21):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y.copy_(x)
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        ms = sorted(times)[len(times) // 2]
        print(f"torch copy batch {batch}: {ms * 1e3:.1f} us, {2 * 4 * n / ms / 1e6:.0f} GB/s")


if __name__ == "__main__":
    main()
