"""What a claim of REPRODUCTION.md declares, the registry the report reads, and how a claim is judged.

A claim is one module in ``experiments/claims/`` that builds a :class:`Claim` and passes it to
:func:`register`: its id, its statement and the paper's words, the grid studies it reads, its rule
in words and as code (``judge``), the cases its statistic averages (``cases``), the checks that
rule out a bug when its verdict is doubtful, and the report sections and figures it owns. The
report (experiments/report.py) loops over :data:`CLAIMS` in id order; no part of the report looks a
claim up by its id, and no claim reads another's internals (what several share lives in
experiments/records.py, experiments/rules.py and experiments/studies.py).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from experiments.records import Runs
from experiments.spread import NOT_RUN, Spread, spread_of
from metrics.intervals import MINIMUM_SEEDS

NOT_IN_PAPER = "not in the paper"


@dataclass(frozen=True)
class Section:
    """A Markdown section of the report: ``render(report)`` returns its lines (empty when the grid
    has nothing for it; ``report`` is an experiments.report.ReportInputs). ``place`` orders the
    detail sections of every claim and of the report itself, in reading order."""
    place: int
    render: Callable


@dataclass(frozen=True)
class Figure:
    """A figure a claim draws from the records: ``draw(runs, path)`` returns the path written, or
    None when there is nothing to draw; sections show it by its ``caption``. It is drawn only when
    the records hold runs of ``study`` (a grid without that study has nothing for it)."""
    caption: str
    file: str
    draw: Callable
    study: str


@dataclass(frozen=True)
class RuleChange:
    """One change of a claim's rule, as git history holds it: when and by what (``change``),
    whether it was made after the claim's numbers had been seen (``after_numbers``), and the rule and
    verdict that stood before it. The report prints every change; one made after the numbers is
    marked beside the verdict."""
    when: str              # "2026-12-01, commit 80c6bc4 (issue 27)"
    change: str            # what changed, in words
    after_numbers: bool    # made after the claim's numbers were seen in a committed REPRODUCTION.md
    earlier_rule: str      # the rule before the change, quoted or summarised
    earlier_verdict: str   # the verdict it gave, quoted


@dataclass(frozen=True)
class Claim:
    """One claim, as its module declares it."""
    id: str                # "C8": the report's order is the number after the C
    statement: str         # what the paper (or this project) claims, with its section
    paper: str             # the paper's own words or numbers, quoted, or NOT_IN_PAPER
    studies: tuple         # the grid studies (experiments/grid.py) whose runs it reads
    rule: Union[str, Callable]   # how the verdict is decided, in words (or a function of Runs giving them)
    judge: Callable        # Runs → (verdict, evidence): the rule as code, on every seed pooled
    cases: Callable        # Runs → [the rule's statistic per case], for the spread over seeds
    statistic: str         # what one case measures, in words
    margin: str            # the rule's margin on it, in words …
    threshold: float       # … and its value, drawn in the seeds figure
    checks: str            # what rules out a bug in the computation the verdict reads
    by_seed: bool = True   # whether one seed alone holds enough cases for the rule
    sections: tuple = ()   # Section, …
    figures: tuple = ()    # Figure, …
    history: tuple = ()    # RuleChange, …: every change of the rule since its first verdict, oldest first
    # {verdict: (comparison, value)}: where the statistic's t-interval over the seeds must lie for that
    # verdict to stand ("≥" 0.1: its low end at or above 0.1); a verdict not named is not checked
    seed_sides: dict = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.id.lstrip("C"))

    def rule_text(self, runs: Runs) -> str:
        return self.rule(runs) if callable(self.rule) else self.rule


@dataclass(frozen=True)
class Judgement:
    """A claim judged on the records: one row of the report's claims table."""
    id: str
    statement: str
    rule: str
    verdict: str
    evidence: str          # our numbers the verdict reads
    paper: str
    checks: str
    per_seed: dict = field(default_factory=dict)   # {seed: verdict on that seed alone}
    spread: Spread = None                          # the rule's statistic across seeds
    history: tuple = ()                            # the claim's RuleChange entries
    pooled: str = None                             # the rule's verdict before the seeds' check (seed_checked)


CLAIMS = {}  # {id: Claim}: every module of experiments/claims/ registers its claim here


def register(claim: Claim) -> Claim:
    """Add ``claim`` to CLAIMS (a test may register one of its own)."""
    if claim.id in CLAIMS:
        raise ValueError(f"a claim {claim.id} is registered already")
    CLAIMS[claim.id] = claim
    return claim


def registered() -> list:
    """Every registered claim, in id order (C2 before C10)."""
    return sorted(CLAIMS.values(), key=lambda claim: claim.number)


def judge(claim: Claim, runs: Runs) -> Judgement:
    """``claim`` judged on ``runs`` (every seed pooled), with its verdict on each seed alone (where
    ``claim.by_seed``) and the spread of its cases over the seeds."""
    seeds = runs.seeds(claim.studies)  # the claim's own studies' seeds: C12's and C13's are not the main grid's
    by_seed = {seed: runs.for_seed(seed) for seed in seeds}
    per_seed = ({seed: _verdict(claim, alone) if _has_results(alone, claim.studies) else NOT_RUN
                 for seed, alone in by_seed.items()}
                if claim.by_seed and len(seeds) > 1 else {})
    spread = spread_of({seed: claim.cases(alone) for seed, alone in by_seed.items()}, claim.statistic, claim.margin,
                       claim.threshold)
    # the pooled rule reads the same seeds as the spread: those every study of the claim holds
    pooled, evidence = claim.judge(Runs([r for r in runs.records if r["config"].seed in seeds], runs.lamb)
                                   if seeds else runs)
    verdict = seed_checked(pooled, claim.seed_sides.get(pooled), spread)
    return Judgement(claim.id, claim.statement, claim.rule_text(runs), verdict, evidence, claim.paper, claim.checks,
                     per_seed, spread, claim.history, pooled)


SIDES = {"≥": lambda low, high, value: low >= value, ">": lambda low, high, value: low > value,
         "≤": lambda low, high, value: high <= value, "<": lambda low, high, value: high < value}


def seed_checked(verdict: str, side, spread: Spread) -> str:
    """``verdict`` where the statistic's t-interval over the seeds lies on its ``side`` (comparison,
    value), else 'not established on N seeds', the pooled rule's verdict and the reason beside it
    (issue 45). A zero-width interval (every seed the same value) decides nothing by itself: the
    verdict stands only where that value is on its side on every seed, and says so."""
    if side is None:
        return verdict
    comparison, value = side
    seeds = len(spread.per_seed) if spread else 0
    undecided = f"not established on {seeds} seed{'s' * (seeds != 1)} (the rule on the pooled runs: {verdict}; "
    if seeds < MINIMUM_SEEDS:
        return undecided + f"fewer than {MINIMUM_SEEDS} seeds)"
    low, high = spread.interval
    if spread.degenerate:
        if SIDES[comparison](low, high, value):
            return f"{verdict} ({spread.degenerate}, on its side of {value:g} on every seed)"
        return undecided + spread.degenerate + ")"
    if SIDES[comparison](low, high, value):
        return verdict
    return undecided + f"the t-interval [{low:.3f}, {high:.3f}] is not {comparison} {value:g})"


def _has_results(runs: Runs, studies) -> bool:
    """Whether every one of ``studies`` that has runs here holds a result in one of them: a seed
    whose runs of some study the grid has not reached is 'not run' (a partial report), never 'not
    measurable', which says the results cannot decide. (A run shared by two studies counts for both:
    the kernel study's GMK2 run is the λ sweep's.)"""
    planned = [[record for record in runs.records if study in record["studies"]] for study in studies]
    planned = [records for records in planned if records]
    return bool(planned) and all(any(record["metrics"] is not None or record["evaluation"] is not None
                                     for record in records) for records in planned)


def _verdict(claim: Claim, runs: Runs) -> str:
    return claim.judge(runs)[0]


def judge_all(runs: Runs) -> list:
    """Every registered claim judged on ``runs``, in id order."""
    return [judge(claim, runs) for claim in registered()]


def claim_figures(runs: Runs, figure_dir) -> dict:
    """{caption: path} of every figure the registered claims draw from ``runs`` into ``figure_dir``."""
    drawn = {figure.caption: figure.draw(runs, Path(figure_dir) / figure.file)
             for claim in registered() for figure in claim.figures if runs.study(figure.study)}
    return {caption: path for caption, path in drawn.items() if path}


# issue 45's change, shared by every claim judged on paired differences (C7–C11)
SEED_UNIT = ("2026-12-07, issue 45",
             "the seed became the unit: each seed's cases averaged, then a t-interval over the seeds that must clear "
             "the margin (else 'not established on N seeds'); comparisons across detectors judged per detector")


# … and the rule it replaced, common to them all
POOLED_BOOTSTRAP = ("the mean over cases pooled across seeds (cells × seeds as if independent) beyond the margin, "
                    "with its 95% percentile bootstrap interval over those cases excluding 0")


def seed_unit_change(earlier_verdict: str, earlier_rule_also: str = "") -> RuleChange:
    """Issue 45's change of a claim judged on paired differences, made after v3's numbers; the earlier
    rule is POOLED_BOOTSTRAP, with what else the claim's rule said (``earlier_rule_also``)."""
    return RuleChange(SEED_UNIT[0], SEED_UNIT[1], True, POOLED_BOOTSTRAP + earlier_rule_also, earlier_verdict)


__all__ = ["Claim", "Judgement", "RuleChange", "seed_unit_change", "Section", "Figure", "CLAIMS", "register", "registered", "judge", "judge_all",
           "claim_figures", "NOT_IN_PAPER"]
