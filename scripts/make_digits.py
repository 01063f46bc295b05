"""Converts scikit-learn's 8x8 digits (1,797 images, CC BY 4.0, bundled with scikit-learn,
no download) into data/digits.safetensors for the demo: `images` u8 [N, 1, 8, 8] with values
0..16 and `labels` u8 [N]. The demo normalises the pixels itself.

Run from the repository root: python scripts/make_digits.py
"""

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits


def main() -> None:
    digits = load_digits()
    images = digits.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.uint8)
    assert images.max() <= 16 and len(images) == 1797
    save_file(
        {"images": np.ascontiguousarray(images), "labels": labels},
        "data/digits.safetensors",
        metadata={"source": "scikit-learn load_digits (UCI optical recognition of handwritten digits)", "license": "CC BY 4.0"},
    )


if __name__ == "__main__":
    main()
