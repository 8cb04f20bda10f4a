"""C7's paired verdict: does ML-MMDR make a backdoor harder to erase than RBT does?

A pair is one (attack, defense, seed) erased on both models. It is usable when neither erasing
collapsed the model (inference.COLLAPSE_SHARE, at the last epoch or any of the last
``LAST_EPOCHS`` whose ASR is averaged) and both kept BA within ``BA_KEPT`` of their BA before the
defense: a defense that breaks a model tells nothing about the attack. Each pair gives the
difference of the last-5-epoch mean ASR, ML-MMDR minus RBT (one epoch's ASR swings by more than
the margin). The rule, stated before any number:

- "not measurable" with fewer than ``MIN_PAIRS`` usable pairs over at least ``MIN_DEFENSES``
  defenses;
- otherwise the seed is the unit (issue 45): each seed's pairs are averaged, and "harder to
  erase" ("easier") stands only if the 95% t-interval of the mean over the seeds lies at or beyond
  +``MARGIN`` (at or below −``MARGIN``); "no consistent difference" if it lies inside ±``MARGIN``;
- else "not established on N seeds" (and so with fewer than 3 seeds, or a degenerate interval).

(Until issue 45 the interval was a bootstrap over the pairs, as if pairs of one seed were
independent, and "harder" needed only a mean beyond the margin with the interval excluding 0.)

Each defense is also judged on its own by the same rule, with ``MIN_PAIRS_PER_DEFENSE`` usable pairs.
"""
from dataclasses import dataclass

from metrics.intervals import paired_verdict

BA_KEPT = 0.05
MARGIN = 0.10
MIN_PAIRS = 8
MIN_DEFENSES = 2
MIN_PAIRS_PER_DEFENSE = 3
LAST_EPOCHS = 5


@dataclass(frozen=True)
class Pair:
    attack: str
    defense: str
    seed: int
    rbt: dict        # the defense_<name>.json of the RBT run
    mlmmdr: dict     # … of the ML-MMDR run

    @property
    def usable(self) -> bool:
        return why_unusable(self.rbt) is None and why_unusable(self.mlmmdr) is None

    @property
    def difference(self) -> float:
        return last_epochs_asr(self.mlmmdr) - last_epochs_asr(self.rbt)


def last_epochs_asr(result: dict) -> float:
    """The mean ASR over the last ``LAST_EPOCHS`` epochs of an erasing (fewer when it ran fewer)."""
    rows = result["history"][1:][-LAST_EPOCHS:]
    return sum(row["asr"] for row in rows) / len(rows)


def why_unusable(result: dict):
    """None for an erasing that counts, else why not: collapsed (at the end or within the last
    epochs), or BA more than ``BA_KEPT`` below its BA before the defense."""
    rows = result["history"][1:][-LAST_EPOCHS:]
    collapsed = [row["epoch"] for row in rows if row.get("collapsed_to_class") is not None]
    if result["after"].get("collapsed_to_class") is not None or collapsed:
        return f"collapsed (epoch {', '.join(map(str, collapsed or [rows[-1]['epoch']]))})"
    lost = result["before"]["ba"] - result["after"]["ba"]
    if lost > BA_KEPT:
        return f"lost {100 * lost:.1f} points of BA"
    return None


def judge(cases: list, minimum: int, defenses: int = None) -> dict:
    """{verdict, reason, pairs, seeds, mean, interval} of (seed, paired difference) cases under the
    rule of this module."""
    # too few defenses: not measurable, whatever the count of pairs
    enough = defenses is None or defenses >= MIN_DEFENSES
    found = paired_verdict(cases if enough else [], MARGIN, minimum, "harder to erase", "easier to erase")
    return {"verdict": found["verdict"], "reason": found["reason"], "pairs": len(cases), "seeds": found["seeds"],
            "mean": found["mean"], "interval": found["interval"]}


def erasing_verdict(pairs: list) -> dict:
    """{overall: judge(...), by_defense: {defense: judge(...)}, usable, total} over ``pairs``."""
    usable = [pair for pair in pairs if pair.usable]
    defenses = list(dict.fromkeys(pair.defense for pair in pairs))
    overall = judge([(p.seed, p.difference) for p in usable], MIN_PAIRS, len({p.defense for p in usable}))
    by_defense = {name: judge([(p.seed, p.difference) for p in usable if p.defense == name], MIN_PAIRS_PER_DEFENSE)
                  for name in defenses}
    return {"overall": overall, "by_defense": by_defense, "usable": len(usable), "total": len(pairs)}
