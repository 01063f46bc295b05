"""DCT fixtures from scipy: tests/fixtures/dct_scipy.safetensors.

For each length N: `x_N` (f32 rows), `dct2_N` = scipy.fft.dct(x, type=2, norm="ortho") and
`dct3_N` = scipy.fft.idct(x, type=2, norm="ortho") (the orthonormal DCT-III), both in float64
from the f32 inputs. Plus one 2-D case on a 7x9 grid: `grid_x` [2, 7, 9, 3] and
`grid_dct2` = scipy.fft.dctn over axes (1, 2).
"""

import os

import numpy as np
import scipy.fft
from safetensors.numpy import save_file

SIZES = [1, 2, 7, 13, 14, 64, 100, 1000, 4096]


def main():
    rng = np.random.default_rng(20240611)
    out = {}
    for n in SIZES:
        rows = 1 if n >= 1000 else 3
        x = rng.standard_normal((rows, n)).astype(np.float32)
        x64 = x.astype(np.float64)
        out[f"x_{n}"] = x
        out[f"dct2_{n}"] = scipy.fft.dct(x64, type=2, norm="ortho", axis=-1)
        out[f"dct3_{n}"] = scipy.fft.idct(x64, type=2, norm="ortho", axis=-1)
    g = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
    out["grid_x"] = g
    out["grid_dct2"] = scipy.fft.dctn(g.astype(np.float64), type=2, norm="ortho", axes=(1, 2))
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "dct_scipy.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path)


if __name__ == "__main__":
    main()
