"""Confidence intervals for the report's verdicts, with the seed as the unit (issue 45).

The cells of one seed (model × attack, detector, defense …) share that seed's training runs, so
they are not independent: every verdict of REPRODUCTION.md averages its statistic within each seed
first, then takes Student's t-interval of the mean over the seeds (``scipy.stats.t``), and stands
only where that interval clears the rule's margin.
"""
import numpy as np

LEVEL = 0.95


NOT_MEASURABLE = "not measurable"
MINIMUM_SEEDS = 3


def paired_verdict(cases, margin: float, minimum: int, above: str, below: str,
                   neither: str = "no consistent difference", minimum_seeds: int = MINIMUM_SEEDS) -> dict:
    """The report's rule for paired differences, with the seed as the unit (issue 45). ``cases`` are
    (seed, difference) pairs, one per cell of that seed (model × attack, detector, defense …);
    the cells of a seed are averaged first (:func:`per_seed_means`), then the t-interval of the mean
    over the seeds (:func:`seed_interval`) decides:

    - ``not measurable`` with fewer than ``minimum`` differences in all;
    - ``above`` when the whole interval lies at or beyond +``margin``; ``below`` when it lies at or
      below −``margin``; ``neither`` when it lies strictly inside (−``margin``, +``margin``);
    - otherwise, and always with fewer than ``minimum_seeds`` seeds or a degenerate interval,
      'not established on N seeds', the reason beside it.

    {verdict, reason, cases, seeds, per_seed, mean, sd, interval, degenerate}."""
    cases = [(seed, float(d)) for seed, d in cases if d is not None and d == d]
    per_seed = per_seed_means(cases)
    if len(cases) < minimum:
        return {"verdict": NOT_MEASURABLE, "reason": f"{len(cases)} of the {minimum} differences the rule needs",
                "cases": len(cases), "seeds": len(per_seed), "per_seed": per_seed, "mean": None, "sd": None,
                "interval": None, "degenerate": None}
    found = {**seed_verdict(per_seed, margin, above, below, minimum_seeds), "cases": len(cases), "per_seed": per_seed}
    if found["interval"] is not None and not found["degenerate"] and found["seeds"] >= minimum_seeds:
        low, high = found["interval"]
        if -margin < low and high < margin:
            found.update(verdict=neither, reason=f"the interval lies inside ±{margin:g}"
                                                 + (", though not around 0" if low > 0 or high < 0 else ""))
    return found


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
