"""The project's own patch triggers and the stamp that plants them, x′ = x + α·m⊙(t − x).

Every pattern here is drawn by a formula (no third-party image), grey (equal in every channel,
so it is no colour cue on a grey dataset), and lies inside rows and columns 2..29 of a 32×32
image: Fashion-MNIST's 28×28 images are zero-padded by 2 pixels, and a trigger on that border
would be a cue no paper attack has. A :class:`Stamp` is a pattern with its support (the mask).
"""
from dataclasses import dataclass

import torch

SIDE = 32
INSIDE = (2, 29)  # first and last row/column a trigger may touch


@dataclass(frozen=True)
class Stamp:
    """A trigger at 32×32: ``pattern`` (H, W) in [0, 1] and its support ``mask`` (H, W) in {0, 1}."""

    pattern: torch.Tensor
    mask: torch.Tensor

    def __add__(self, other: "Stamp") -> "Stamp":
        """Two stamps planted together (their supports must not overlap)."""
        if bool((self.mask * other.mask).any()):
            raise ValueError("the two stamps overlap")
        return Stamp(self.pattern * self.mask + other.pattern * other.mask, torch.maximum(self.mask, other.mask))


def _square(pattern: torch.Tensor, top: int, left: int) -> Stamp:
    """``pattern`` (h, w) placed with its top-left corner at (top, left) of a 32×32 canvas."""
    height, width = pattern.shape
    if top < INSIDE[0] or left < INSIDE[0] or top + height - 1 > INSIDE[1] or left + width - 1 > INSIDE[1]:
        raise ValueError(f"a {height}×{width} stamp at ({top}, {left}) leaves rows/columns {INSIDE}")
    canvas, mask = torch.zeros(SIDE, SIDE), torch.zeros(SIDE, SIDE)
    canvas[top:top + height, left:left + width] = pattern
    mask[top:top + height, left:left + width] = 1.0
    return Stamp(canvas, mask)


def checkerboard(size: int, cell: int = 1) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows // cell) + (cols // cell)) % 2 == 0).float()


def rings(size: int) -> torch.Tensor:
    """Concentric square rings, one pixel wide, alternating white and black from a white rim."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    depth = torch.minimum(torch.minimum(rows, cols), torch.minimum(size - 1 - rows, size - 1 - cols))
    return (depth % 2 == 0).float()


def stripes(size: int) -> torch.Tensor:
    """Diagonal stripes two pixels wide."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows + cols) // 2) % 2 == 0).float()


def cross3() -> torch.Tensor:
    """A 3×3 X: the corners and the centre white."""
    return torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


def four_corners() -> Stamp:
    """Four 3×3 X patches, one in each corner of the allowed area (BadNets' four-patch layout)."""
    low, high = INSIDE[0], INSIDE[1] - 2
    stamp = _square(cross3(), low, low)
    for top, left in ((low, high), (high, low), (high, high)):
        stamp = stamp + _square(cross3(), top, left)
    return stamp


def right_corner() -> Stamp:
    """A 5×5 checkerboard on the right, above the bottom-right corner patch."""
    return _square(checkerboard(5), 21, 24)


def left_corner() -> Stamp:
    """Its mirror on the left: with :func:`right_corner`, the test trigger's pair of corners."""
    return _square(checkerboard(5), 21, 3)


def large_rings() -> Stamp:
    """A 13×13 block of rings in the upper right."""
    return _square(rings(13), 5, 14)


def square_stripes() -> Stamp:
    """An 8×8 block of diagonal stripes in the lower left."""
    return _square(stripes(8), 18, 8)


def tact_square() -> Stamp:
    """TaCT's trigger: an 8×8 checkerboard of 2×2 cells in the lower right (the reference's
    ``trojan_square_32`` place, rows and columns 21–28)."""
    return _square(checkerboard(8, cell=2), 21, 21)


def plant(x: torch.Tensor, stamp: Stamp, alpha) -> torch.Tensor:
    """x′ = x + α·m⊙(t − x) (the reference's blend), with the stamp resized to x's side when x is
    not 32×32; ``alpha`` a number or a (len(x),) tensor (one α per image)."""
    pattern, mask = stamp.pattern, stamp.mask
    if pattern.shape[-1] != x.shape[-1]:
        size = x.shape[-2:]
        pattern = torch.nn.functional.interpolate(pattern[None, None], size=size, mode="nearest")[0, 0]
        mask = torch.nn.functional.interpolate(mask[None, None], size=size, mode="nearest")[0, 0]
    pattern, mask = pattern.to(x.device, x.dtype), mask.to(x.device, x.dtype)
    if torch.is_tensor(alpha):
        alpha = alpha.to(x.device, x.dtype).view(-1, 1, 1, 1)
    return x + alpha * mask * (pattern - x)
