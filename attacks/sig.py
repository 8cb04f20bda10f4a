"""SIG (Barni et al. 2019): a horizontal sinusoidal signal added to the image (paper TABLE 1)."""
import math
from dataclasses import dataclass

import torch

from attacks.base import Attack
from utils.params import param


@dataclass
class Sig(Attack):
    """x′ = clip(x + b), b(i, j) = Δ·sin(2π·j·f/W) for column j; Δ = 20/255, f = 6."""

    sig_delta: float = param(20 / 255, "amplitude Δ in [0,1] pixel units (Barni et al.: 20/255)",
                             low=0.0, high=1.0, low_open=True)
    sig_freq: float = param(6.0, "frequency f (Barni et al.: 6)", low=0.0, low_open=True)
    name = "sig"
    display = "SIG"

    def signal(self, width: int) -> torch.Tensor:
        columns = torch.arange(width, dtype=torch.float64)
        return (self.sig_delta * torch.sin(2 * math.pi * columns * self.sig_freq / width)).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        signal = self._on(f"signal{x.shape[-1]}", self.signal(x.shape[-1]), x)
        return (x + signal).clamp(0.0, 1.0)
