"""Confidence intervals for the report's verdicts: scipy's bootstrap of a mean, seeded.

Every verdict of REPRODUCTION.md that rests on several cases (seeds, attacks, models, defenses)
states its margin against the 95% percentile bootstrap interval of the mean over those cases.
"""
import numpy as np
from scipy.stats import bootstrap

RESAMPLES = 10_000
LEVEL = 0.95


def bootstrap_interval(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple:
    """(low, high): the percentile bootstrap interval of the mean of ``values``
    (``scipy.stats.bootstrap``, ``resamples`` seeded resamples). Constant values, where a resample
    has nothing to vary, give (value, value); a single value too."""
    values = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    found = bootstrap((values,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                      random_state=np.random.default_rng(seed))
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


NOT_MEASURABLE = "not measurable"


def paired_verdict(differences, margin: float, minimum: int, above: str, below: str,
                   neither: str = "no consistent difference", seed: int = 0) -> dict:
    """The report's rule for paired differences, stated once: ``not measurable`` with fewer than
    ``minimum`` differences; ``above`` if their mean is at least ``margin`` and the 95% bootstrap
    interval of the mean lies above 0; ``below`` if the mean is at most −``margin`` and the
    interval lies below 0; else ``neither``. {verdict, cases, mean, interval}."""
    differences = [float(d) for d in differences if d is not None and d == d]
    if len(differences) < minimum:
        return {"verdict": NOT_MEASURABLE, "cases": len(differences), "mean": None, "interval": None}
    mean = float(np.mean(differences))
    low, high = bootstrap_interval(differences, seed=seed)
    verdict = above if mean >= margin and low > 0 else below if mean <= -margin and high < 0 else neither
    return {"verdict": verdict, "cases": len(differences), "mean": mean, "interval": (low, high)}


def per_seed_means(cases) -> dict:
    """{seed: mean of its values}: ``cases`` are (seed, value) pairs, one per cell (model × attack,
    detector, defense …) of that seed; missing values are left out, and a seed without any value is
    absent. The cells of one seed share its training runs, so the seed, not the cell, is the unit
    an interval resamples."""
    by_seed = {}
    for seed, value in cases:
        if value is not None and value == value:
            by_seed.setdefault(seed, []).append(float(value))
    return {seed: float(np.mean(values)) for seed, values in sorted(by_seed.items())}


def seed_interval(per_seed: dict, level: float = LEVEL) -> dict:
    """The t-interval of the mean over seeds (``scipy.stats.t``, n − 1 degrees of freedom) of one
    statistic per seed: {seeds, mean, sd, interval, degenerate}. ``degenerate`` names why an
    interval carries no information: one seed (no spread to estimate), or every seed the same value
    (a zero-width interval: a statistic on a grid, such as a pruning step, or a floor)."""
    from scipy.stats import t

    values = np.asarray(list(per_seed.values()), dtype=float)
    found = {"seeds": len(values), "mean": float(values.mean()) if len(values) else None, "sd": None,
             "interval": None, "degenerate": None}
    if len(values) < 2:
        found["degenerate"] = f"{len(values)} seed{'s' * (len(values) != 1)}: no spread to estimate"
        return found
    sd = float(values.std(ddof=1))
    found["sd"] = sd
    if np.ptp(values) == 0:  # the float sd of equal values need not be exactly 0
        found.update(interval=(float(values[0]), float(values[0])),
                     degenerate=f"every one of the {len(values)} seeds gives {values[0]:+.3f} (a zero-width interval)")
        return found
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * sd / np.sqrt(len(values))
    found["interval"] = (found["mean"] - half, found["mean"] + half)
    return found


def seed_verdict(per_seed: dict, margin: float, above: str, below: str, minimum_seeds: int = 3,
                 level: float = LEVEL) -> dict:
    """The report's rule with the seed as the unit: ``above`` when the whole t-interval over the
    seeds lies at or beyond +``margin``, ``below`` when it lies at or below −``margin``; otherwise,
    and always with fewer than ``minimum_seeds`` seeds or a degenerate interval, 'not established on
    N seeds'. {verdict, reason, seeds, mean, sd, interval, degenerate}."""
    found = seed_interval(per_seed, level)
    undecided = f"not established on {found['seeds']} seed{'s' * (found['seeds'] != 1)}"
    if found["seeds"] < minimum_seeds:
        return {**found, "verdict": undecided, "reason": f"fewer than {minimum_seeds} seeds"}
    if found["degenerate"]:
        return {**found, "verdict": undecided, "reason": found["degenerate"]}
    low, high = found["interval"]
    if low >= margin:
        return {**found, "verdict": above, "reason": f"the interval lies at or above +{margin:g}"}
    if high <= -margin:
        return {**found, "verdict": below, "reason": f"the interval lies at or below −{margin:g}"}
    return {**found, "verdict": undecided, "reason": f"the interval [{low:+.3f}, {high:+.3f}] does not clear ±{margin:g}"}
