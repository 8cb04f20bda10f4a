"""A detector is one file and one registry line: one registered here, from this file alone, is run
by evaluate.py and shown in evaluation.json, evaluation.md and the report's sensitivity table;
the paper's claims stay on AC, SS and SR."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import EVAL_SMALL


def _first_direction(inputs, options, seed):
    """Flags the half of the pool with the largest first coordinate: a detector whose answer this
    test can compute by hand."""
    from defenses import Detection

    scores = np.asarray(inputs.features)[:, 0]
    flagged = scores >= np.median(scores)
    return Detection(flagged=flagged, scores=scores, threshold_scores=[scores], decisions={"upper_half": flagged},
                     info={"median": float(np.median(scores))})


@pytest.fixture
def throwaway(monkeypatch):
    import defenses

    detector = defenses.Detector("throwaway", "Throwaway", "this test", "pool", _first_direction,
                                 rule=lambda options, protocol: "the upper half of the first coordinate")
    monkeypatch.setitem(defenses.DETECTORS, "throwaway", detector)
    return detector


def test_a_detector_registered_from_a_test_reaches_every_output(throwaway, tiny_sweep, tmp_path):
    import evaluate
    from experiments.records import Runs
    from experiments.claims.c04_detection import section_sensitivity
    from pipeline.cli import run_cli
    from pipeline.rundir import find_runs

    shutil.copytree(tiny_sweep, tmp_path, dirs_exist_ok=True)
    assert run_cli(evaluate.main, ["--all_runs", str(tmp_path), "--no_progress", "--detectors", "ac", "throwaway",
                                   *EVAL_SMALL]) == 0
    runs = find_runs(tmp_path)
    for run in runs:
        result = json.loads(run.file("evaluation").read_text())
        assert result["detection"]["detectors"] == ["ac", "throwaway"]
        pool = result["detection"]["pools"][0]
        entry = pool["levels"]["s1"]["throwaway"]
        assert entry["headline_rule"] == "own" and 0.0 <= entry["headline"] <= 1.0
        assert entry["variants"] == {} and "median" in entry
        report = run.file("evaluation_report").read_text()
        assert "| Throwaway | s1 |" in report and "Throwaway: the upper half of the first coordinate" in report
    records = [{"config": run.config(), "studies": ["lambda"], "evaluation": run.read("evaluation")} for run in runs]
    lines = section_sensitivity(Runs(records, lamb=0.1))
    assert any(line.startswith("| Throwaway: its headline rule (own)") for line in lines)


def test_the_paper_claims_rest_on_ac_ss_and_sr_whatever_is_registered(throwaway):
    import defenses

    assert defenses.PAPER_DETECTORS == ("ac", "ss", "sr") and "throwaway" in defenses.DETECTORS


def test_an_unknown_detector_is_one_line(tiny_run, capsys):
    import evaluate
    from pipeline.cli import run_cli

    argv, _ = tiny_run
    assert run_cli(evaluate.main, argv + ["--detectors", "spectral", *EVAL_SMALL]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown detector 'spectral'; choose one of")
