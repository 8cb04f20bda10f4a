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
