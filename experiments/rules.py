"""The pieces of rule that several claims share, stated once: a verdict by the share of cases that
pass, C2's "attack kept" (which C6 applies to its kernels), a difference per model × attack cell,
and the margin and minimum of the detection comparisons (C9–C11)."""
from experiments.records import metric_of, present
from metrics.intervals import NOT_MEASURABLE

KEPT_BA, KEPT_ASR = 0.02, 0.05      # BA within ±0.02 and ASR at most 0.05 lower count as "attack kept"
DETECTION_MARGIN = 0.1              # C9–C11: a difference in detection F1 that counts …
MIN_CASES = 3                       # … over at least this many cases


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


def interval_text(found: dict) -> str:
    """'; mean difference …, 95% interval […] over N cases' of a metrics.intervals.paired_verdict."""
    if found["mean"] is None:
        return f" ({found['cases']} cases: {found['verdict']})"
    low, high = found["interval"]
    return f"; mean difference {found['mean']:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}] over {found['cases']} cases"
