"""How a claim holds across seeds: its verdict on each seed alone, and the statistic its rule
reads, per case, against the rule's margin.

A *case* is the unit the rule averages over (a model × attack cell, a defended run, a kernel, a
paired erasing); every case belongs to one seed. The cases of one seed share its training
runs, so the seed is the unit (issue 45): the report gives each seed's mean, their mean ± sd, and
the 95% t-interval of the mean over the seeds (metrics.intervals.seed_interval) beside the rule's
margin, or the reason an interval is degenerate (one seed, every seed equal).
"""
import statistics
from dataclasses import dataclass

from experiments.records import counted
from metrics.intervals import seed_interval

# the verdict of a claim whose runs are not there yet
NOT_RUN = "not run"


@dataclass(frozen=True)
class Spread:
    statistic: str        # what one case measures, in words
    margin: str           # the rule's margin on it, in words (e.g. "≥ 0.1")
    threshold: float      # … and its value
    per_seed: dict        # {seed: mean over that seed's cases}
    cases: int
    interval: tuple = None   # the t-interval of the mean over the seeds
    degenerate: str = None   # why the interval carries no information, if it does not

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
    if not cases:
        return Spread(statistic, margin, threshold, {}, 0)
    per_seed = {seed: statistics.mean(values) for seed, values in cases.items()}
    found = seed_interval(per_seed)
    return Spread(statistic, margin, threshold, per_seed, sum(map(len, cases.values())), found["interval"],
                  found["degenerate"])


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
    """'statistic: mean ± sd over N seeds (per seed …, K cases); 95% t-interval over the seeds
    [lo, hi] (or why there is none) against the rule's margin'."""
    if spread is None or not spread.cases:
        return "–"
    seeds = ", ".join(f"{seed}: {value:.3f}" for seed, value in spread.per_seed.items())
    if spread.degenerate:
        interval = f"no interval: {spread.degenerate}"
    else:
        low, high = spread.interval
        interval = f"95% t-interval over the seeds [{low:.3f}, {high:.3f}]"
    return (f"{spread.statistic}: {spread.seed_mean:.3f} ± {spread.seed_sd:.3f} over {len(spread.per_seed)} "
            f"seed{'s' * (len(spread.per_seed) != 1)} ({seeds}; {counted(spread.cases, 'case')}); {interval}, "
            f"against the rule's {spread.margin}")
