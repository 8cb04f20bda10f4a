"""Blended (Chen et al. 2017): x′ = (1 − α)·x + α·pattern with a fixed pattern image."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attacks.base import Attack
from utils.errors import ParameterError
from utils.params import param

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATTERN_NAME = "attacks/assets/blended_pattern.png"  # relative, so config.json is the same on every machine
DEFAULT_PATTERN = PROJECT_ROOT / DEFAULT_PATTERN_NAME


def pattern_path(path) -> Path:
    """``path`` as given, or, when it is relative and not found from the working directory, relative
    to the project (where the default pattern lives)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or path.exists() else PROJECT_ROOT / path


def load_pattern(path) -> torch.Tensor:
    """An RGB image file → float tensor (3,H,W) in [0,1]."""
    from PIL import Image

    path = pattern_path(path)
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise ParameterError("blend_pattern", f"cannot be read: {path} ({exc}); pass an image file") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass
class Blended(Attack):
    """α = 0.1 as in the authors' prototype; the pattern is resized to the input size."""

    blend_alpha: float = param(0.1, "blend ratio α (prototype: 0.1)", low=0.0, high=1.0, low_open=True)
    blend_pattern: str = param(DEFAULT_PATTERN_NAME, "pattern image; a relative path is looked up from the working "
                               "directory, then from the project (default: the project's seeded noise pattern)")
    name = "blended"
    display = "Blended"

    def __post_init__(self):
        super().__post_init__()
        self.pattern = load_pattern(self.blend_pattern)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pattern = self.pattern
        if pattern.shape[-2:] != x.shape[-2:]:
            pattern = F.interpolate(pattern[None], size=x.shape[-2:], mode="bilinear",
                                    align_corners=False)[0]
        pattern = self._on(f"pattern{tuple(x.shape[-2:])}", pattern[: x.shape[1]], x)
        return (1.0 - self.blend_alpha) * x + self.blend_alpha * pattern
