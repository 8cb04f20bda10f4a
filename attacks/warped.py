"""Warped (WaNet, Nguyen & Tran 2021): a fixed smooth warping field as the trigger."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attacks.base import Attack
from utils.params import param
from utils.seed import generator


@dataclass
class Warped(Attack):
    """k = 4 control points, strength s = 0.5, grid_rescale = 1, noise mode with cross ratio 2.

    The warp field is drawn once from ``seed``: uniform control points in [−1,1]^(2×k×k),
    normalised by their mean absolute value, upsampled bicubically to H×W.
    """

    wanet_k: int = param(4, "control grid size k (WaNet: 4)", low=2, high=32)
    wanet_s: float = param(0.5, "warp strength s (WaNet: 0.5)", low=0.0)
    wanet_grid_rescale: float = param(1.0, "grid rescale (WaNet: 1)", low=0.0, low_open=True)
    wanet_cross_ratio: float = param(2.0, "noise-mode samples per poisoned sample, kept at their true labels "
                                     "(WaNet: 2; 0 disables noise mode)", low=0.0)
    seed: int = 0
    name = "warped"
    display = "WaNet"

    def __post_init__(self):
        super().__post_init__()
        control = torch.rand(1, 2, self.wanet_k, self.wanet_k, generator=generator(self.seed, "wanet"))
        control = control * 2 - 1
        self.control_points = control / control.abs().mean()
        self._grids = {}

    def warp_grid(self, height: int) -> torch.Tensor:
        """The sampling grid (1,H,H,2) of the backdoor warp, clamped to [−1, 1]."""
        if height not in self._grids:
            noise_grid = F.interpolate(self.control_points, size=height, mode="bicubic",
                                       align_corners=True).permute(0, 2, 3, 1)
            line = torch.linspace(-1, 1, steps=height)
            rows, cols = torch.meshgrid(line, line, indexing="ij")
            identity = torch.stack((cols, rows), dim=2)[None]
            grid = (identity + self.wanet_s * noise_grid / height) * self.wanet_grid_rescale
            self._grids[height] = grid.clamp(-1, 1)
        return self._grids[height]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._on(f"grid{x.shape[-1]}", self.warp_grid(x.shape[-1]), x)
        return F.grid_sample(x, grid.expand(len(x), -1, -1, -1), align_corners=True)

    @property
    def noise_per_poison(self) -> float:
        return self.wanet_cross_ratio

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise mode: the warp plus a fresh random per-sample perturbation of the grid."""
        height = x.shape[-1]
        grid = self._on(f"grid{height}", self.warp_grid(height), x)
        jitter = torch.rand(len(x), height, height, 2, generator=generator, device=x.device,
                            dtype=x.dtype) * 2 - 1
        noisy = (grid + jitter / height).clamp(-1, 1)
        return F.grid_sample(x, noisy, align_corners=True)
