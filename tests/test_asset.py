"""ASSET (Pan et al., USENIX Security 2023): the medcouple and the adjusted outlyingness against
their definitions, the threshold's two formulas, and the whole offset training on a planted
population it must find without flagging one clean row of the same set."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from defenses import DETECTORS
from defenses.detectors.asset import (AssetOptions, adjusted_outlyingness, asset, loss_threshold, medcouple,
                                      reinitialised)
from metrics.auroc import auroc

CLASSES, SIDE = 4, 4


def medcouple_by_pairs(values) -> float:
    """The definition, pair by pair (ties at the median numbered in sorted order)."""
    ordered = sorted(values)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    tied = [k for k, value in enumerate(ordered) if value == median]
    kernel = []
    for i, j in itertools.product(range(n), range(n)):
        high, low = ordered[i], ordered[j]
        if high >= median >= low:
            if high == low == median:
                a, b = tied.index(i) + 1, tied.index(j) + 1
                kernel.append(float(np.sign(a + b - 1 - len(tied))))
            else:
                kernel.append(((high - median) - (median - low)) / (high - low))
    return float(np.median(kernel))


def test_the_medcouple_is_its_pairwise_definition():
    rng = np.random.default_rng(0)
    skewed = rng.exponential(size=41)
    with_ties = np.r_[np.round(rng.normal(size=30), 1), [0.0, 0.0, 0.0]]
    for values in (skewed, with_ties, [1.0, 2.0, 3.0, 4.0, 10.0], [5.0, 5.0, 5.0, 1.0, 9.0, 12.0]):
        assert medcouple(values) == pytest.approx(medcouple_by_pairs(list(values)))
    assert medcouple(skewed) > 0.1 and medcouple(-skewed) == pytest.approx(-medcouple(skewed))
    assert medcouple([1.0, 2.0, 3.0, 4.0, 5.0]) == 0.0


def test_adjusted_outlyingness_uses_the_skew_adjusted_fences():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 20.0, 3.0])
    mc, median = medcouple(scores), np.median(scores)
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    high = q3 + 1.5 * math.exp((3 if mc > 0 else 4) * mc) * (q3 - q1)
    low = q1 - 1.5 * math.exp((-4 if mc > 0 else -3) * mc) * (q3 - q1)
    expected = [(s - median) / (high - median) if s > median else (median - s) / (median - low) for s in scores]
    assert np.allclose(adjusted_outlyingness(scores), expected)
    assert (adjusted_outlyingness(scores) > 2).tolist() == [False] * 5 + [True, False]


def test_the_threshold_formulas():
    losses = np.r_[np.linspace(1.0, 1.2, 50), np.linspace(3.0, 4.0, 10)]
    lower = losses[losses <= np.sort(losses)[(len(losses) - 1) // 2]]
    mean, sigma = lower.mean(), math.sqrt(lower.var() + 1e-6)
    found = loss_threshold(losses, 1e-6)
    assert found["reference"] == pytest.approx(mean + sigma * math.sqrt(-2 * math.log(1e-6) * sigma * math.sqrt(2 * math.pi)))
    assert found["density"] == pytest.approx(mean + sigma * math.sqrt(-2 * math.log(1e-6 * sigma * math.sqrt(2 * math.pi))))
    # the density's threshold lies between the two groups; the reference's, μ + σ·√(−2 ln ε·σ·√(2π)),
    # inside the lower one when σ is small
    assert 1.2 < found["density"] < 3.0 and found["reference"] < 1.2


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten, self.linear = nn.Flatten(), nn.Linear(SIDE * SIDE, CLASSES)

    def forward(self, x):
        return self.linear(self.flatten(x))


def planted(count: int, seed: int, poisoned: int = 0) -> tuple:
    """(images, labels): class k lights three pixels of row k; the poisoned ones (the last
    ``poisoned``) also light column 3 and are labelled 0 (the target)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=gen)
    images = 0.02 * torch.rand(count, 1, SIDE, SIDE, generator=gen)
    images[torch.arange(count), 0, labels, :3] += 0.8
    if poisoned:
        images[-poisoned:, 0, :, 3] = 1.0
        labels[-poisoned:] = 0
    return images, labels


def test_asset_finds_a_planted_population_and_flags_no_clean_sample_under_the_density_rule():
    options = AssetOptions(epochs=10, batch_size=32, lr=0.003, offset_lr=0.003, offset_steps=30,
                           threshold_rule="density")
    images, labels = planted(160, 1, poisoned=16)
    base, _ = planted(40, 2)
    malicious = np.r_[np.zeros(144, bool), np.ones(16, bool)]
    detection = asset(Flat(), images, labels, images.flatten(1), base, base.flatten(1), options, seed=0)
    assert auroc(detection.scores, malicious) == 1.0 and detection.own_f1(malicious) == 1.0
    # the reference's formula sits lower: every poisoned sample flagged, and clean ones with them
    assert detection.decisions["reference"][malicious].all() and detection.decisions["reference"][~malicious].any()
    assert detection.info["selected_for_maximising"] > 0 and detection.info["training_steps"] == 2 * 10 * 5


def test_a_fresh_model_has_the_architecture_and_new_weights():
    victim = Flat()
    fresh = reinitialised(victim, 0)
    assert not torch.equal(fresh.linear.weight, victim.linear.weight)
    assert torch.equal(fresh.linear.weight, reinitialised(victim, 0).linear.weight)  # seeded
    assert DETECTORS["asset"].consumes == "training" and not DETECTORS["asset"].has_levels
