"""Patched (BadNets): a white square stamped in the bottom-right corner."""
from dataclasses import dataclass

import torch

from attacks.base import Attack
from utils.errors import UserError


@dataclass
class Patched(Attack):
    """x′ = x with the bottom-right ``patch_size``×``patch_size`` pixels set to 1 (all channels)."""

    patch_size: int = 3
    name = "patched"

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.patch_size <= 32:
            raise UserError(f"--patch_size must be between 1 and 32, got {self.patch_size}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[..., -self.patch_size:, -self.patch_size:] = 1.0
        return out
