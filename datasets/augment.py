"""Batched augmentation as tensor ops on the training device (no PIL, no per-sample Python)."""
import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop of the original size from a zero-padded copy, and a horizontal flip with p = ½.

    The same transform as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip,
    done for the whole batch as one gather. Works on any dtype (uint8 here, before scaling).
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    flip = torch.rand(batch, 1, generator=generator, device=device) < 0.5
    rows = top + torch.arange(height, device=device)
    cols = left + torch.arange(width, device=device)
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(batch, device=device)[:, None, None, None],
                  torch.arange(channels, device=device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def cutout(images: torch.Tensor, generator: torch.Generator, holes: int = 1, length: int = 3) -> torch.Tensor:
    """Zero ``holes`` square patches per image (DeVries & Taylor 2017), as the NAD code's
    ``Cutout(1, 3)``: a centre (y, x) uniform over the image, rows y − length//2 … y + length//2 − 1
    and the same columns, clipped at the border, so ``length=3`` cuts a 2×2 hole (smaller at an edge).
    The same centre serves every channel. Works on any dtype; returns a new tensor."""
    batch, _, height, width = images.shape
    device = images.device
    half = length // 2
    keep = torch.ones(batch, 1, height, width, dtype=torch.bool, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    for _ in range(holes):
        y = torch.randint(0, height, (batch, 1, 1), generator=generator, device=device)
        x = torch.randint(0, width, (batch, 1, 1), generator=generator, device=device)
        hole = (rows >= y - half) & (rows < y + half) & (cols >= x - half) & (cols < x + half)
        keep &= ~hole.unsqueeze(1)
    return images * keep.to(images.dtype)
