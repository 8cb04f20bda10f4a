"""Distances between two sets of representations (paper §2.3, Eqs. 3–5, App. B) and ARO (TABLE 2).

All take (n, d) and (m, d) arrays or tensors (other shapes are flattened) and return floats.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from regularizers.mmd import mmd2 as _mmd2_tensor


def _tensor(a) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    return a.detach().flatten(1).double()


def mmd2(x, y, kernel: str = "gmk2", estimator: str = "biased") -> float:
    """MMD² with the regulariser's own Gaussian-mixture kernel (Eq. 3). It runs the regulariser's
    own code, which computes in float32 (on centred features, which keeps the Gram-based squared
    distances accurate); ED² and SWD₁ below compute in float64."""
    return float(_mmd2_tensor(_tensor(x).float(), _tensor(y).float(), kernel, estimator))


def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.cdist(a, b).mean())


def energy_distance2(x, y) -> float:
    """ED² = 2·E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ (Eq. 4), V-statistic (all pairs, diagonals included)."""
    x, y = _tensor(x), _tensor(y)
    return 2 * _mean_pairwise_distance(x, y) - _mean_pairwise_distance(x, x) - _mean_pairwise_distance(y, y)


def sliced_wasserstein1(x, y, n_projections: int = 100, seed: int = 0) -> float:
    """SWD₁ (Eq. 5): the mean over random unit directions θ of W₁(θᵀX, θᵀY), by POT."""
    import ot

    return float(ot.sliced_wasserstein_distance(_tensor(x).numpy(), _tensor(y).numpy(),
                                                n_projections=n_projections, p=1, seed=seed))


@dataclass(frozen=True)
class Distance:
    """A registered distance: its display name and ``function(x, y, n_projections, seed)``."""

    display: str
    function: Callable


DISTANCES = {
    "mmd2": Distance("MMD²", lambda x, y, n_projections, seed: mmd2(x, y)),
    "ed2": Distance("ED²", lambda x, y, n_projections, seed: energy_distance2(x, y)),
    "swd1": Distance("SWD₁", sliced_wasserstein1),
}
METRICS = tuple(DISTANCES)


def distance(metric: str, x, y, n_projections: int = 100, seed: int = 0) -> float:
    if metric not in DISTANCES:
        raise ValueError(f"unknown metric '{metric}'; choose one of {METRICS}")
    return DISTANCES[metric].function(x, y, n_projections, seed)


def ascending_rank(value: float, others) -> float:
    """1-based rank of ``value`` among itself and ``others``, smallest first (ties share the mean rank)."""
    below = sum(other < value for other in others)
    ties = sum(other == value for other in others)
    return 1 + below + ties / 2


def aro(per_metric: dict) -> float:
    """Average rank order (paper TABLE 2) at one level.

    ``per_metric`` maps each metric to {"attack", "intra", "inter"} values; the attack value is
    ranked among the three (1 = smallest) and the ranks are averaged over the metrics. 3 means the
    malicious set is farther from the benign target set than even the nearest other class.
    """
    ranks = [ascending_rank(values["attack"], [values["intra"], values["inter"]])
             for values in per_metric.values()
             if all(values.get(key) is not None for key in ("attack", "intra", "inter"))]
    return float(np.mean(ranks)) if ranks else float("nan")
