"""SCALE-UP (Guo et al., ICLR 2023) on a model whose answers are known: a trigger that survives
pixel scaling is found, clean images whose class moves with their brightness are not flagged."""
import numpy as np
import pytest
import torch

from defenses import DETECTORS
from defenses.detectors.scale_up import ScaleUpOptions, scale_up, scaled_prediction_consistency
from metrics.auroc import auroc


def brightness_model(images: torch.Tensor) -> torch.Tensor:
    """Class 0 when the top-left 3×3 patch is white (the trigger: white stays white when scaled);
    otherwise the class of the mean brightness in tenths, 1…9 (a scaled image brightens and moves)."""
    images = torch.as_tensor(images)
    triggered = images[:, :, :3, :3].amin(dim=(1, 2, 3)) > 0.95
    level = (images.mean(dim=(1, 2, 3)) * 10).floor().clamp(0, 8).long() + 1
    classes = torch.where(triggered, torch.zeros_like(level), level)
    return torch.nn.functional.one_hot(classes, 10).float()


def population(count: int, triggered: bool, seed: int) -> torch.Tensor:
    images = 0.02 + 0.1 * torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    if triggered:
        images[:, :, :3, :3] = 1.0
    return images


def test_spc_is_the_share_of_scales_that_keep_the_prediction():
    images = torch.cat([population(1, True, 0), population(1, False, 1)])
    spc, passes = scaled_prediction_consistency(brightness_model, images, [3, 5, 7, 9, 11])
    assert passes == 12 and spc[0] == 1.0 and spc[1] == 0.0
    # brightness 0.02-0.12 (mean ≈ 0.07): ×1 keeps it, ×11 saturates it: with S = {1} alone every image is consistent
    assert scaled_prediction_consistency(brightness_model, images, [1])[0].tolist() == [1.0, 1.0]


def test_scale_up_finds_a_planted_population_and_flags_no_clean_one():
    images = torch.cat([population(40, False, 2), population(20, True, 3)])
    malicious = np.r_[np.zeros(40, bool), np.ones(20, bool)]
    detection = scale_up(brightness_model, images)
    assert detection.own_f1(malicious) == 1.0 and auroc(detection.scores, malicious) == 1.0
    assert detection.info["forward_passes"] == 60 * 6 and detection.info["clean_images"] == 0
    clean_only = scale_up(brightness_model, population(50, False, 4))
    assert not clean_only.flagged.any()


def test_the_authors_noise_is_seeded_and_registered_flags_resolve():
    images = population(10, False, 5)
    options = ScaleUpOptions(scales=[2, 3, 4, 5, 6, 7, 8, 9, 10, 11], noise=0.02)
    first, second = scale_up(brightness_model, images, options, seed=1), scale_up(brightness_model, images, options, seed=1)
    assert np.array_equal(first.scores, second.scores)
    assert DETECTORS["scale_up"].consumes == "inputs" and DETECTORS["scale_up"].display == "SCALE-UP"
    with pytest.raises(ValueError):
        ScaleUpOptions(threshold=1.5)
