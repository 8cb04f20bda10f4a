"""experiments/compare_regularizers.py: one row per finished run, its numbers read back from the
run's own evaluation.json; a directory without one is a one-line error."""
import json

from experiments.compare_regularizers import main, row
from experiments.records import fmt
from pipeline.cli import run_cli


def test_each_row_reads_the_runs_own_numbers(tiny_sweep, capsys):
    run_dirs = sorted(path for path in tiny_sweep.iterdir() if (path / "evaluation.json").is_file())
    assert run_cli(main, [str(path) for path in run_dirs]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + len(run_dirs)
    for path in run_dirs:
        evaluation = json.loads((path / "evaluation.json").read_text())
        cells = row(path)
        assert cells[:2] == [evaluation["run_name"], evaluation["method"]]
        assert cells[5] == fmt(evaluation["distances"]["levels"]["s1"]["mmd2"]["attack"])
        pool = max((p for p in evaluation["detection"]["pools"] if p["ratio"] == 1.0), key=lambda p: p["N"])
        assert cells[-1] == fmt(pool["levels"]["s3"]["ac"]["headline"])
        assert cells[-2] == fmt(evaluation["distances"]["separability"]["s3"]["svm_accuracy"])


def test_a_run_without_an_evaluation_is_one_line(tmp_path, capsys):
    assert run_cli(main, [str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "run evaluate.py on it first" in error
