"""Patched (BadNets): a white square stamped in the bottom-right corner."""
from dataclasses import dataclass

import torch

from attacks.base import Attack
from utils.params import param


@dataclass
class Patched(Attack):
    """x′ = x with the bottom-right ``patch_size``×``patch_size`` pixels set to 1 (all channels)."""

    patch_size: int = param(3, "side of the white bottom-right square (BadNets: 3)", low=1, high=32)
    name = "patched"
    display = "Patched"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[..., -self.patch_size:, -self.patch_size:] = 1.0
        return out
