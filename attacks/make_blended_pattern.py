"""Regenerate ``assets/blended_pattern.png``, the project's Blended trigger pattern.

The pattern is 32×32 RGB uniform noise from NumPy's PCG64 generator with seed 20211109
(the paper's arXiv date), so it is the project's own and freely redistributable:
``python -m attacks.make_blended_pattern``.
"""
import numpy as np

from attacks.blended import DEFAULT_PATTERN

SEED = 20211109


def make_pattern(size: int = 32) -> np.ndarray:
    return np.random.default_rng(SEED).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


if __name__ == "__main__":
    from PIL import Image

    Image.fromarray(make_pattern()).save(DEFAULT_PATTERN)
    print(f"wrote {DEFAULT_PATTERN}")
