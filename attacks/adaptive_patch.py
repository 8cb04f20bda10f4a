"""Adaptive-Patch (Qi et al., ICLR 2023), as the authors' ``poison_tool_box/adaptive_patch.py``
with the CIFAR-10 settings of their ``config.py``.

Four patch triggers, each with its own training α. Each poisoned image (relabelled to the target)
and each cover image (keeping its label) carries exactly one of them, in the reference's order:
the first quarter of the group (its images in index order) the first trigger, the next quarter
the second, and so on. At test time two triggers are planted together at α = 1. The reference's
rates: 0.3% poisoned, 0.6% cover.

The triggers are the project's own (``attacks/stamps.py``), placed as the reference's are placed
relative to each other: a 5×5 corner patch (α 0.5), a 13×13 block (α 0.2), four 3×3 corner
patches (α 0.5), an 8×8 square (α 0.3); at test the corner patch on both sides plus the four
corner patches, as the reference's ``phoenix_corner2`` + ``badnet_patch4``.
"""
from dataclasses import dataclass

import torch

from attacks.base import TOOLBOX, Attack
from attacks import stamps
from utils.params import param

TRAIN_STAMPS = (stamps.right_corner, stamps.large_rings, stamps.four_corners, stamps.square_stripes)


@dataclass
class AdaptivePatch(Attack):
    ap_alphas: list = param([0.5, 0.2, 0.5, 0.3], "training α of each of the four triggers (reference config.py, "
                            "CIFAR-10: 0.5, 0.2, 0.5, 0.3)", low=0.0, high=1.0, low_open=True, nargs=4)
    ap_test_alpha: float = param(1.0, "α of the two triggers planted together at test (reference: 1)",
                                 low=0.0, high=1.0, low_open=True)
    ap_cover_per_poison: float = param(2.0, "cover images per poisoned one (reference: 0.6% cover for 0.3% "
                                       "poisoned)", low=0.0)
    name = "adaptive_patch"
    display = "Adaptive-Patch"
    reference_rates = (0.003, 0.006)
    published_regime = TOOLBOX

    def __post_init__(self):
        super().__post_init__()
        self.train_stamps = [make() for make in TRAIN_STAMPS]
        self.test_stamp = stamps.left_corner() + stamps.right_corner() + stamps.four_corners()

    @property
    def cover_per_poison(self) -> float:
        return self.ap_cover_per_poison

    @staticmethod
    def trigger_of(ordinal: torch.Tensor, group_size: int, count: int = len(TRAIN_STAMPS)) -> torch.Tensor:
        """Which trigger each image of a group gets: the reference splits the group's images, in
        index order, into ``count`` consecutive parts (the first ⌊size/count⌋·k … of them)."""
        return torch.clamp(ordinal * count // max(group_size, 1), max=count - 1)

    def train_trigger(self, x: torch.Tensor, group: str, ordinal: torch.Tensor, group_size: int) -> torch.Tensor:
        which = self.trigger_of(ordinal.cpu(), group_size)
        out = x.clone()
        for index, stamp in enumerate(self.train_stamps):
            rows = (which == index).nonzero().flatten().to(x.device)
            if len(rows):
                out[rows] = stamps.plant(x[rows], stamp, self.ap_alphas[index])
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return stamps.plant(x, self.test_stamp, self.ap_test_alpha)
