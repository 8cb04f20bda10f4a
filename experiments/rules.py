"""The pieces of rule that several claims share, stated once: a verdict by the share of cases that
pass, C2's "attack kept" (which C6 applies to its kernels), a difference per model × attack cell,
and the margin and minimum of the detection comparisons (C9–C11)."""
from experiments.records import metric_of, present
from metrics.intervals import MINIMUM_SEEDS as MIN_SEEDS
from metrics.intervals import NOT_MEASURABLE, paired_verdict

KEPT_BA, KEPT_ASR = 0.02, 0.05      # BA within ±0.02 and ASR at most 0.05 lower count as "attack kept"
DETECTION_MARGIN = 0.1              # C9–C11: a difference in detection F1 that counts …
MIN_CASES = 3                       # … over at least this many cases (and MIN_SEEDS seeds)


def verdict_by_share(fraction, full: float = 1.0, part: float = 0.5) -> str:
    """'reproduced' when at least ``full`` of the cases pass, 'partly reproduced' from ``part``."""
    if fraction is None:
        return NOT_MEASURABLE
    return "reproduced" if fraction >= full else "partly reproduced" if fraction >= part else "not reproduced"


def attack_kept(rbt, ml) -> bool:
    """C2's criterion: ML-MMDR's BA within ±KEPT_BA of RBT's and its ASR at most KEPT_ASR below."""
    return (abs(metric_of(ml, "ba") - metric_of(rbt, "ba")) <= KEPT_BA
            and metric_of(ml, "asr") >= metric_of(rbt, "asr") - KEPT_ASR)


def cells_difference(runs, value, first: str, second: str) -> list:
    """value(first's record) − value(second's record) over the claims' cells (model × attack)."""
    out = []
    for _, _, rbt, sl, ml in runs.cells():
        records = {"RBT": rbt, "SL-MMDR": sl, "ML-MMDR": ml}
        a, b = value(records[first]), value(records[second])
        out.append(a - b if present(a, b) and records[first] and records[second] else None)
    return out


def seed_rule_text(margin: float, above: str, below: str, neither: str) -> str:
    """The seed-unit rule of metrics.intervals.paired_verdict, in words, for a claim's rule."""
    return (f"each seed's cases are averaged first, then the 95% t-interval of the mean over the seeds decides "
            f"(issue 45: the seed is the unit): '{above}' if it lies at or above +{margin:g}, '{below}' if at or below "
            f"−{margin:g}, '{neither}' if inside ±{margin:g}; otherwise, and with fewer than {MIN_SEEDS} seeds or a "
            f"zero-width interval, 'not established on N seeds'")


def interval_text(found: dict) -> str:
    """'; mean difference …, 95% t-interval over N seeds […] (K cases)' of a
    metrics.intervals.paired_verdict, with the reason where the verdict is not established."""
    if found["mean"] is None:
        return f" ({found['cases']} cases: {found['verdict']})"
    seeds = f"{found['seeds']} seed{'s' * (found['seeds'] != 1)}"
    if found["interval"] is None or found.get("degenerate"):
        return (f"; mean difference {found['mean']:+.3f} over {seeds} ({found['cases']} cases), no interval: "
                f"{found.get('degenerate') or found.get('reason')}")
    low, high = found["interval"]
    return (f"; mean difference {found['mean']:+.3f}, 95% t-interval over {seeds} [{low:+.3f}, {high:+.3f}] "
            f"({found['cases']} cases)")


def by_detector(cases: dict, above: str, below: str, neither: str) -> dict:
    """{detector: paired_verdict} of ``cases`` = {detector: [(seed, difference)]}, each detector
    judged on its own (issue 45: unlike detectors are never averaged together)."""
    return {detector: paired_verdict(found, DETECTION_MARGIN, MIN_CASES, above, below, neither)
            for detector, found in cases.items()}


def measured_tally(judged: dict, name=str, counted: bool = False) -> str:
    """tally() of the detectors ``judged`` could measure ('of N detectors, …' when ``counted``), or
    'not measurable' when none could."""
    measured = {d: found for d, found in judged.items() if found["verdict"] != NOT_MEASURABLE}
    if not measured:
        return NOT_MEASURABLE
    return (f"of {len(measured)} detectors, " if counted else "") + tally(measured, name)


def per_detector(judged: dict, name=str) -> str:
    """'SCAn lowered; mean difference …' for every detector ``judged`` could measure: the evidence
    beside a measured_tally."""
    return "; ".join(f"{name(d)} {found['verdict']}{interval_text(found)}" for d, found in judged.items()
                     if found["verdict"] != NOT_MEASURABLE)


def flattened(differences: dict) -> list:
    """Every difference of a {detector: [(seed, difference)]}: a claim's spread cases."""
    return [d for found in differences.values() for _, d in found]


def tally(judged: dict, name=str) -> str:
    """'lowered for 2 (SCAn, TED), not lowered for 1 (SPECTRE), not established for 1 (Beatrix)': the
    verdict line counts detectors by verdict and names them; ``judged`` = {detector: paired_verdict},
    and ``name`` displays a detector."""
    groups = {}
    for detector, found in judged.items():
        key = "not established" if found["verdict"].startswith("not established") else found["verdict"]
        groups.setdefault(key, []).append(name(detector))
    return ", ".join(f"{verdict} for {len(names)} ({', '.join(names)})" for verdict, names in groups.items())
