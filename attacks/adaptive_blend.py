"""Adaptive-Blend (Qi et al., "Revisiting the Assumption of Latent Separability for Backdoor
Defenses", ICLR 2023), as the authors' ``poison_tool_box/adaptive_blend.py`` plants it.

The blend pattern is cut into a 4×4 grid of pieces. Each poisoned image (relabelled to the target)
and each cover image (keeping its label) gets its own random half of the pieces, 8 of 16, blended
at the training α: x′ = x + α·m⊙(t − x). At test time the whole pattern is blended at the test α.
"Asymmetric trigger planting": a weaker, partial trigger in training and the full, stronger one
at test. The reference's rates: 0.3% poisoned, 0.3% cover.
"""
from dataclasses import dataclass

import torch

from attacks.base import TOOLBOX, Attack
from attacks.blended import DEFAULT_PATTERN_NAME, load_pattern
from attacks.stamps import SIDE
from utils.params import param
from utils.seed import generator

BLOCK = 1024  # piece choices are drawn in blocks of this many images, so a choice never depends on how many there are


@dataclass
class AdaptiveBlend(Attack):
    ab_train_alpha: float = param(0.15, "blend α of the partial trigger in training (0.15: the authors' toolbox "
                                  "README and the CT reproduction commands, -alpha 0.15; the official repository's "
                                  "config default is 0.2: pass 0.2). We follow the toolbox, whose 0.15 < 0.2 is the "
                                  "paper's asymmetric planting", low=0.0, high=1.0, low_open=True)
    ab_test_alpha: float = param(0.2, "blend α of the whole trigger at test (0.2 in both reference repositories)",
                                 low=0.0, high=1.0, low_open=True)
    ab_grid: int = param(4, "the pattern is cut into grid × grid pieces (reference: pieces = 16)", low=1, high=32)
    ab_kept: float = param(0.5, "share of the pieces each training image gets (reference: mask_rate 0.5, "
                           "8 of 16)", low=0.0, high=1.0, low_open=True)
    ab_pattern: str = param(DEFAULT_PATTERN_NAME, "pattern image (default: the project's seeded noise pattern, as "
                            "Blended; the reference's hellokitty image is not shipped); made grey on a grey dataset")
    ab_cover_per_poison: float = param(1.0, "cover images per poisoned one (reference: 0.3% cover for 0.3% "
                                       "poisoned)", low=0.0)
    seed: int = 0
    grayscale: bool = False
    name = "adaptive_blend"
    display = "Adaptive-Blend"
    reference_rates = (0.003, 0.003)
    published_regime = TOOLBOX

    def __post_init__(self):
        super().__post_init__()
        pattern = load_pattern(self.ab_pattern)
        if pattern.shape[-2:] != (SIDE, SIDE):
            pattern = torch.nn.functional.interpolate(pattern[None], size=(SIDE, SIDE), mode="bilinear",
                                                      align_corners=False)[0]
        if self.grayscale:
            pattern = pattern.mean(0, keepdim=True).expand(3, -1, -1)
        self.pattern = pattern.contiguous()
        self._choices = {}
        self._piece_masks = self.piece_masks()

    @property
    def cover_per_poison(self) -> float:
        return self.ab_cover_per_poison

    @property
    def pieces(self) -> int:
        return self.ab_grid * self.ab_grid

    @property
    def kept(self) -> int:
        return int(round(self.ab_kept * self.pieces))

    def piece_masks(self) -> torch.Tensor:
        """(pieces, 32, 32): the support of each piece of the grid, row-major."""
        side = SIDE // self.ab_grid
        masks = torch.zeros(self.pieces, SIDE, SIDE)
        for piece in range(self.pieces):
            row, col = divmod(piece, self.ab_grid)
            masks[piece, row * side:(row + 1) * side, col * side:(col + 1) * side] = 1.0
        return masks

    def chosen_pieces(self, group: str, ordinal: torch.Tensor) -> torch.Tensor:
        """(len(ordinal), pieces) bool: the pieces image ``ordinal`` of ``group`` gets, fixed for the run
        (seeded by the run's seed, the group and the image's block of ``BLOCK``)."""
        rows = []
        for value in ordinal.tolist():
            block, offset = divmod(value, BLOCK)
            key = (group, block)
            if key not in self._choices:
                order = torch.rand(BLOCK, self.pieces, generator=generator(self.seed, f"adaptive-blend-{group}-{block}"))
                ranks = order.argsort(1).argsort(1)
                self._choices[key] = ranks < self.kept
            rows.append(self._choices[key][offset])
        return torch.stack(rows) if rows else torch.zeros(0, self.pieces, dtype=torch.bool)

    def _stamp(self, x: torch.Tensor, masks: torch.Tensor, alpha: float) -> torch.Tensor:
        """x + α·m⊙(t − x) with one mask (B, 32, 32) per image."""
        pattern = self._on("pattern", self.pattern[: x.shape[1]], x)
        masks = masks.to(x.device, x.dtype)[:, None]
        if x.shape[-1] != SIDE:
            pattern = torch.nn.functional.interpolate(pattern[None], size=x.shape[-2:], mode="bilinear",
                                                      align_corners=False)[0]
            masks = torch.nn.functional.interpolate(masks, size=x.shape[-2:], mode="nearest")
        return x + alpha * masks * (pattern - x)

    def train_trigger(self, x: torch.Tensor, group: str, ordinal: torch.Tensor, group_size: int) -> torch.Tensor:
        chosen = self.chosen_pieces(group, ordinal).float()
        masks = torch.einsum("bp,phw->bhw", chosen, self._piece_masks)
        return self._stamp(x, masks, self.ab_train_alpha)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._stamp(x, torch.ones(len(x), SIDE, SIDE), self.ab_test_alpha)

