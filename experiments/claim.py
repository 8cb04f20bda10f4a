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
from experiments.spread import Spread, spread_of

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
    seeds = runs.seeds()
    per_seed = ({seed: _verdict(claim, runs.for_seed(seed)) for seed in seeds}
                if claim.by_seed and len(seeds) > 1 else {})
    spread = spread_of({seed: claim.cases(runs.for_seed(seed)) for seed in seeds}, claim.statistic, claim.margin,
                       claim.threshold)
    verdict, evidence = claim.judge(runs)
    return Judgement(claim.id, claim.statement, claim.rule_text(runs), verdict, evidence, claim.paper, claim.checks,
                     per_seed, spread)


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


__all__ = ["Claim", "Judgement", "Section", "Figure", "CLAIMS", "register", "registered", "judge", "judge_all",
           "claim_figures", "NOT_IN_PAPER"]
