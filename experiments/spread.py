"""How a claim holds across seeds: its verdict on each seed alone, and the statistic its rule
reads, per case, against the rule's margin.

A *case* is the unit the rule averages over (a model × attack cell, a defended run, a kernel, a
paired erasing); every case belongs to one seed. The report gives the statistic as mean ± sd over
the seeds' means, each seed's mean, and the 95% percentile bootstrap interval of the mean over all
cases (``scipy.stats.bootstrap``) beside the rule's margin, so a reader sees whether the verdict
rests on a margin wider than the spread.
"""
import statistics
from dataclasses import dataclass

from experiments.records import counted
from metrics.intervals import bootstrap_interval

# the verdict of a claim whose runs are not there yet
NOT_RUN = "not run"


@dataclass(frozen=True)
class Spread:
    statistic: str        # what one case measures, in words
    margin: str           # the rule's margin on it, in words (e.g. "≥ 0.1")
    threshold: float      # … and its value
    per_seed: dict        # {seed: mean over that seed's cases}
    cases: int
    mean: float = None    # over all cases
    interval: tuple = None

    @property
    def seed_sd(self) -> float:
        values = list(self.per_seed.values())
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def seed_mean(self) -> float:
        return statistics.mean(self.per_seed.values()) if self.per_seed else None


def spread_of(cases: dict, statistic: str, margin: str, threshold: float) -> Spread:
    """``cases``: {seed: [value per case]} → a Spread (None values are dropped; a seed without a
    case is left out)."""
    cases = {seed: [v for v in values if v is not None and v == v] for seed, values in cases.items()}
    cases = {seed: values for seed, values in cases.items() if values}
    pooled = [v for values in cases.values() for v in values]
    if not pooled:
        return Spread(statistic, margin, threshold, {}, 0)
    return Spread(statistic, margin, threshold, {seed: statistics.mean(values) for seed, values in cases.items()}, len(pooled),
                  statistics.mean(pooled), bootstrap_interval(pooled))


def seed_agreement(per_seed: dict) -> str:
    """'' when every seed that ran gives the same verdict, else which seeds give which; seeds whose
    runs are not there yet (a partial report) are named apart, since a missing seed disagrees with none."""
    ran = {seed: verdict for seed, verdict in per_seed.items() if verdict != NOT_RUN}
    missing = [str(seed) for seed in per_seed if seed not in ran]
    note = f"; {NOT_RUN} on seed{'s' * (len(missing) > 1)} {' '.join(missing)}" if missing and ran else ""
    if len(set(ran.values())) <= 1:
        return note
    groups = {}
    for seed, verdict in ran.items():
        groups.setdefault(verdict, []).append(str(seed))
    return "; seeds disagree: " + ", ".join(f"{verdict} on seed{'s' * (len(s) > 1)} {' '.join(s)}"
                                            for verdict, s in groups.items()) + note


def describe(spread: Spread) -> str:
    """'statistic: mean ± sd over N seeds (per seed …); 95% interval over K cases [lo, hi]; margin …'."""
    if spread is None or not spread.cases:
        return "–"
    seeds = ", ".join(f"{seed}: {value:.3f}" for seed, value in spread.per_seed.items())
    low, high = spread.interval
    return (f"{spread.statistic}: {spread.seed_mean:.3f} ± {spread.seed_sd:.3f} over {len(spread.per_seed)} "
            f"seed{'s' * (len(spread.per_seed) != 1)} ({seeds}); mean over {counted(spread.cases, 'case')} {spread.mean:.3f}, 95% "
            f"bootstrap interval [{low:.3f}, {high:.3f}] against the rule's {spread.margin}")
