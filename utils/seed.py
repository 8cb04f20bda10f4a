"""One ``--seed`` drives every random choice; each consumer derives its own generator."""
import random
import zlib

import numpy as np
import torch


# what a --seed may be (a 32-bit signed range, as every generator takes): declared once for every flag that is one
SEED_DOMAIN = {"low": 0, "high": 2**31 - 1}


def derive_seed(seed: int, purpose: str) -> int:
    """A stable per-purpose seed, so adding a new random consumer never shifts the others."""
    return (seed * 1_000_003 + zlib.crc32(purpose.encode())) % (2**31)


def generator(seed: int, purpose: str, device="cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, purpose))
    return gen


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (model initialisation draws from torch's global generator)."""
    random.seed(seed)
    np.random.seed(derive_seed(seed, "numpy") % (2**32))
    torch.manual_seed(seed)


def sample(index: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``count`` of ``index``, a seeded random choice (all of them when fewer exist)."""
    order = torch.randperm(len(index), generator=generator)
    return index[order[:count]]
