"""SIG (Barni et al. 2019): a horizontal sinusoidal signal added to the image (paper TABLE 1)."""
import math
from dataclasses import dataclass

import torch

from attacks.base import Attack
from utils.errors import UserError


@dataclass
class Sig(Attack):
    """x′ = clip(x + b), b(i, j) = Δ·sin(2π·j·f/W) for column j; Δ = 20/255, f = 6."""

    sig_delta: float = 20 / 255
    sig_freq: float = 6.0
    name = "sig"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.sig_delta <= 1.0:
            raise UserError(f"--sig_delta must be in (0, 1] (it is in [0,1] pixel units; "
                            f"20/255 ≈ 0.078 is the default), got {self.sig_delta}")

    def signal(self, width: int) -> torch.Tensor:
        columns = torch.arange(width, dtype=torch.float64)
        return (self.sig_delta * torch.sin(2 * math.pi * columns * self.sig_freq / width)).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        signal = self._on(f"signal{x.shape[-1]}", self.signal(x.shape[-1]), x)
        return (x + signal).clamp(0.0, 1.0)
