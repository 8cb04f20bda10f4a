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
