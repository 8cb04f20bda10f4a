"""experiments/reproduce.py refuses, with one line and the report untouched, to write a report that
says less than the one it would replace: from a mistyped or empty --out_dir, or from fewer finished
stages than the report on disk records (unless --force); and a damaged run file or an unknown flag
is one line too, never a traceback or the usage block."""
import shutil
from pathlib import Path

import pytest

from experiments.report import describe_stages, less_complete, recorded_stages
from experiments.reproduce import build_grid, main as reproduce_main, parse
from pipeline.cli import run_cli
from tests.conftest import EVAL_SMALL, TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


def grid_argv(out_dir, tmp_path, lambdas=("0.1",)) -> list:
    """reproduce.py flags of a grid of one attack whose λ = 0.1 runs are tiny_sweep's runs (trained with
    TINY_RUN's flags, evaluated with EVAL_SMALL); more λs add runs that are not there."""
    shared = [flag for flag in TINY_RUN if flag != "--no_progress"]
    return shared + ["--lambdas", *lambdas, "--attacks", "patched", "--defended_attacks", "--erased_attacks",
                     "--second_model", "none", "--kernels", "--seeds", "0", "--no_pooled", "--no_benchmark",
                     "--adaptive_attacks", "--stacked_attacks", "--regularizer_attacks", "--eval_flags", " ".join(EVAL_SMALL), "--out_dir", str(out_dir),
                     "--figure_dir", str(tmp_path / "figs"), "--report", str(tmp_path / "R.md"), "--report_only"]


def finished(argv) -> tuple:
    """(finished, total) stages of the grid ``argv`` names, as the runs directory holds them now."""
    jobs = build_grid(parse(argv)).jobs()
    total = sum(len(job.stages) for job in jobs)
    return total - sum(len(job.pending()) for job in jobs), total


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def complete_report(tmp_path) -> Path:
    """A copy of the committed REPRODUCTION.md (a complete report) as --report."""
    report = tmp_path / "R.md"
    shutil.copyfile(ROOT / "REPRODUCTION.md", report)
    return report


def test_the_committed_report_reads_as_complete():
    done, total = recorded_stages((ROOT / "REPRODUCTION.md").read_text())
    assert done == total  # (None, None) before the marker: a complete report writes no "Partial report" line


def test_a_report_is_less_complete_by_its_share_of_finished_stages():
    assert not less_complete((3, 10), (3, 10))  # rewriting a partial report as the grid runs is allowed
    assert less_complete((2, 10), (3, 10)) and not less_complete((4, 10), (3, 10))
    assert less_complete((9, 10), (None, None)) and not less_complete((10, 10), (None, None))
    assert less_complete((5, 10), (4, 5)) and not less_complete((5, 5), (9, 10))  # another grid: by share


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_a_runs_directory_without_finished_stages_writes_no_report(tmp_path, capsys, complete_report, where):
    out_dir = tmp_path / "runs" / "reprodcue"
    if where == "empty":
        out_dir.mkdir(parents=True)
    before = complete_report.read_bytes()
    for force in ([], ["--force"]):  # --force replaces a more complete report, never writes an empty one
        assert run_cli(reproduce_main, grid_argv(out_dir, tmp_path) + force) == 2
        line = one_error_line(capsys)
        assert f"--out_dir {out_dir} " in line and "check --out_dir" in line and "run the grid first" in line
        assert complete_report.read_bytes() == before
    assert not (tmp_path / "figs").exists()


def test_a_less_complete_report_is_kept_unless_forced(tiny_sweep, tmp_path, capsys, complete_report):
    partial = grid_argv(tiny_sweep, tmp_path, lambdas=("0.1", "0.3"))  # the λ = 0.3 runs were never trained
    done, total = finished(partial)
    assert 0 < done < total
    before = complete_report.read_bytes()
    assert run_cli(reproduce_main, partial) == 2
    line = one_error_line(capsys)
    recorded = describe_stages(recorded_stages(before.decode()))
    assert f"{complete_report} records {recorded}" in line and f"would record {done} of {total}" in line
    assert "--force" in line and complete_report.read_bytes() == before

    assert run_cli(reproduce_main, partial + ["--force"]) == 0
    assert recorded_stages(complete_report.read_text()) == (done, total)
    assert f"**Partial report: {done} of {total} stages finished.**" in complete_report.read_text()
    # a report other than the profile's own writes its tables beside it, never over the runs directory's
    assert any((tmp_path / "R_tables").glob("*.csv")) and not (tiny_sweep / "tables").exists()

    whole = grid_argv(tiny_sweep, tmp_path)
    # SL-MMDR's and ML-MMDR's scatter stages at λ = 0.1 are left (the partial report drew RBT's); the grid runs
    # them (no --report_only), and the more complete report replaces the partial one
    assert finished(whole)[0] == finished(whole)[1] - 2
    assert run_cli(reproduce_main, whole[:-1]) == 0
    done, total = finished(whole)
    assert done == total
    written = complete_report.read_bytes()
    assert recorded_stages(written.decode()) == (done, total)
    capsys.readouterr()
    assert run_cli(reproduce_main, partial) == 2  # the marker now records the finished grid
    assert "records " + f"{done} of {total} stages finished" in one_error_line(capsys)
    assert complete_report.read_bytes() == written


def test_a_file_the_command_did_not_write_is_kept(tiny_sweep, tmp_path, capsys):
    notes = tmp_path / "R.md"
    notes.write_text("# my notes\n")
    assert run_cli(reproduce_main, grid_argv(tiny_sweep, tmp_path)) == 2
    assert "is not a report this command wrote" in one_error_line(capsys)
    assert notes.read_text() == "# my notes\n"


def test_a_run_file_that_is_not_an_object_is_one_line(tmp_path, capsys):
    argv = grid_argv(tmp_path / "runs", tmp_path)
    run = build_grid(parse(argv)).jobs()[0].run
    run.path.mkdir(parents=True)
    run.file("checkpoint").write_bytes(b"")
    run.file("config").write_text("[1, 2]")
    assert run_cli(reproduce_main, argv) == 2
    line = one_error_line(capsys)
    assert str(run.file("config")) in line and "list" in line and "retrain" in line
    assert not (tmp_path / "R.md").exists()


def test_a_metrics_json_with_a_score_that_is_not_a_number_is_refused_and_a_headless_evaluation_is_not_there(tmp_path):
    """The report read metrics.json's BA as it was ({"ba": "x"}: a TypeError traceback from a claim's
    rule, once the figures were drawn): it is refused in one line saying that retraining writes it
    again; an evaluation.json cut to its header is no evaluation, so the report shows none (the grid
    evaluates the run again: its stage is not up to date), instead of a KeyError."""
    from experiments.grid import collect
    from utils.errors import UserError

    grid = build_grid(parse(grid_argv(tmp_path / "runs", tmp_path)))
    run = grid.jobs()[0].run
    run.path.mkdir(parents=True)
    run.file("evaluation").write_text('{"run_name": "%s", "inputs_hash": "0123456789abcdef"}' % run.name)
    assert [record["evaluation"] for record in collect(grid)] == [None] * len(grid.jobs())
    run.file("metrics").write_text('{"ba": "x", "asr": 0.5}')
    with pytest.raises(UserError) as error:
        collect(grid)
    assert str(error.value) == (f"{run.file('metrics')} holds ba = 'x', not a number; delete it and retrain the run: "
                                f"python main.py with the run's flags")


def test_an_unknown_flag_is_one_line(capsys):
    assert run_cli(reproduce_main, ["--report_onyl"]) == 2
    line = one_error_line(capsys)
    assert "--report_onyl" in line and "--help" in line


def test_a_report_path_that_is_a_directory_is_refused_before_any_figure(tmp_path, capsys):
    """Refused before the figures are drawn: nothing is written for a report that cannot be."""
    from pipeline.cli import run_cli
    from tests.conftest import ROOT

    (tmp_path / "report").mkdir()
    argv = ["--report_only", "--out_dir", str(ROOT / "results" / "reproduce"), "--report", str(tmp_path / "report"),
            "--figure_dir", str(tmp_path / "figures")]
    assert run_cli(reproduce_main, argv) == 2
    assert capsys.readouterr().err.strip() == f"error: --report {tmp_path / 'report'} is a directory; give the path " \
                                              f"of the Markdown file to write"
    assert not (tmp_path / "figures").exists() and list((tmp_path / "report").iterdir()) == []
