"""A claim is one file: one registered here, from this file alone, is judged by its own rule on the
committed grid's records and shows its rule, verdict, evidence and section in the rendered report,
in its place; the registered claims declare studies the grid has and checks that cite real tests."""
import re

import pytest

from experiments.claim import CLAIMS, Claim, Section, judge_all
from experiments.claims import registered
from experiments.grid import STUDIES, collect
from experiments.records import Runs
from experiments.report import detail_sections, render
from experiments.reproduce import build_grid, parse
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def archive():
    """The committed results archive's records and the grid that reads them (no training)."""
    grid = build_grid(parse(["--out_dir", str(ROOT / "results" / "reproduce")]))
    return collect(grid), grid


def _evaluated(runs: Runs) -> tuple:
    """The throwaway rule: count the main grid's evaluated runs, a number the test computes again."""
    count = sum(bool(r["evaluation"]) for r in runs.main())
    return ("reproduced" if count else "not measurable"), f"{count} evaluated runs in the main grid"


def _section(report) -> list:
    return ["## Throwaway section", "", f"base seed: {len(report.one.main())} main-grid runs"]


THROWAWAY = Claim(id="C99", statement="Throwaway: the grid evaluated its runs", paper="not in the paper",
                  studies=("lambda",), rule="reproduced if at least one main-grid run is evaluated",
                  judge=_evaluated, cases=lambda runs: [1.0 for r in runs.main() if r["evaluation"]],
                  statistic="evaluated runs", margin="≥ 1", threshold=1.0,
                  checks="counted by hand in tests/test_claim_registry.py",
                  sections=(Section(145, _section),))


def _settings() -> dict:
    return {"stages": (1, 1), "command": "python experiments/reproduce.py", "versions": "Python", "machine": "CPU",
            "facts": {}, "timings": {}, "invocations": [], "differences": [], "benchmark": {}}


def test_a_claim_registered_from_a_test_reaches_the_report(archive, monkeypatch):
    records, grid = archive
    monkeypatch.setitem(CLAIMS, THROWAWAY.id, THROWAWAY)
    runs = Runs(records, grid.lamb)
    judged = judge_all(runs)
    assert [j.id for j in judged][-2:] == ["C13", "C99"]  # id order: the number, not the string
    expected = sum(bool(r["evaluation"]) for r in runs.main())
    assert expected > 0
    report = render(records, _settings(), grid, {}, judged)
    glance, row = [line for line in report.splitlines() if line.startswith("| C99 | Throwaway")]
    assert "**reproduced**" in glance and f"; {expected} cases)" in glance  # the verdicts at a glance
    assert report.index(glance) < report.index("## Claims") < report.index(row)
    assert "reproduced if at least one main-grid run is evaluated" in row and "**reproduced**" in row
    assert f"{expected} evaluated runs in the main grid" in row
    one = sum(1 for r in runs.for_seed(grid.base.seed).main())
    assert f"base seed: {one} main-grid runs" in report
    # its section sits at its place: after the distances (140), before the paper's scale (150)
    assert report.index("## Distances") < report.index("## Throwaway section") < report.index("## At the paper's scale")


def test_the_registered_claims_are_c1_to_c13_and_read_studies_the_grid_has():
    assert [claim.id for claim in registered()] == [f"C{n}" for n in range(1, 14)]
    for claim in registered():
        assert claim.studies and set(claim.studies) <= set(STUDIES), claim.id
        assert claim.judge.__module__ == claim.cases.__module__, claim.id  # its rule and cases are its own


def test_every_test_a_claims_checks_cite_exists():
    for claim in registered():
        cited = re.findall(r"tests/test_\w+\.py", claim.checks)
        assert [path for path in cited if not (ROOT / path).is_file()] == [], claim.id


def test_no_two_sections_share_a_place():
    places = [section.place for section in detail_sections()]
    assert len(places) == len(set(places))


def test_a_claim_registered_twice_is_refused(monkeypatch):
    from experiments.claim import register

    monkeypatch.setitem(CLAIMS, THROWAWAY.id, THROWAWAY)
    with pytest.raises(ValueError, match="a claim C99 is registered already"):
        register(THROWAWAY)


def test_a_claim_module_imports_no_other_claim():
    """No claim knows another's internals: what two share lives in experiments/rules.py,
    experiments/pruned.py, experiments/adaptive.py or experiments/records.py."""
    for path in (ROOT / "experiments" / "claims").glob("c*.py"):
        text = path.read_text()
        assert not re.search(r"experiments\.claims\.c\d", text), path.name
        # the package and the report import the claims (the package by listing itself, which the
        # layer test's import graph cannot see): a claim importing either back would be a circle
        assert not re.search(r"(from|import) experiments\.(claims|report)\b", text), path.name


def test_render_reads_no_claim_by_its_id():
    """The report loops over the registry: no part of it names a claim to find it (only
    experiments/claim.py, the registry itself, indexes it)."""
    readers = ("experiments/report.py", "experiments/sections.py", "experiments/reproduce.py", "visualization/claims.py")
    for path in [ROOT / name for name in readers]:
        text = path.read_text()
        assert not re.search(r"""CLAIMS\[|\.id ==|\bid == ["']C\d""", text), path.name

