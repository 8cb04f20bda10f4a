"""Runs that survive the filesystem, with real files: a full disk (a file-size limit), a file where
a directory should be, unreadable resume and model files of every kind, a symlinked run
directory, a second process on a run whose writer is in flight, and SIGTERM."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT

T = ["--data_name", "digits", "--width", "0.125", "--epochs", "1", "--train_subset", "100", "--no_progress",
     "--device", "cpu"]
NAME = "digits_vgg11_patched_w0.125_n100"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def main_py(*argv, limit_bytes=None, wait=True):
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    command = [sys.executable, "main.py", *argv]
    options = dict(cwd=ROOT, env=ENV, text=True, preexec_fn=limited if limit_bytes else None)
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
    return subprocess.run(command, capture_output=True, timeout=300, **options)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, stderr
    return lines[0]


def snapshot(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fs")
    done = main_py(*T, "--out_dir", str(out_dir))
    assert done.returncode == 0, done.stderr
    return out_dir


def test_a_full_disk_is_one_line_and_leaves_the_finished_run_beside_it_intact(trained):
    before = snapshot(trained / NAME)
    done = main_py(*T, "--width", "0.5", "--out_dir", str(trained), limit_bytes=256 * 1024)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("error: File too large (") and "nothing of this run was kept" in line
    assert snapshot(trained / NAME) == before
    assert not any(path.name.endswith((".staging", ".tmp")) for path in trained.iterdir())


def test_a_full_disk_after_an_epoch_keeps_what_resumes(tmp_path, monkeypatch, capsys):
    """The second epoch's resume.pt hits a full disk (the write itself replaced: a file-size limit
    cannot tell two epochs' equal files apart); the first epoch's state stays and resumes."""
    import errno

    import pipeline.stages.train as train_stage
    from pipeline.cli import run_cli

    import main

    saved, original = [], train_stage.save_torch

    def full_at_the_second(obj, path):
        saved.append(path)
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(obj, path)

    monkeypatch.setattr(train_stage, "save_torch", full_at_the_second)
    assert run_cli(main.main, T + ["--epochs", "2", "--out_dir", str(tmp_path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: No space left on device (") and line.endswith(
        "the run resumes from its last finished epoch with --resume")
    monkeypatch.setattr(train_stage, "save_torch", original)
    assert run_cli(main.main, T + ["--epochs", "2", "--out_dir", str(tmp_path), "--resume"]) == 0
    assert len(json.loads((tmp_path / NAME / "metrics.json").read_text())["history"]) == 2


@pytest.mark.parametrize("flag", ["--out_dir", "--figure_dir"])
def test_a_file_where_a_directory_should_be_is_one_line_before_any_work(tmp_path, capsys, flag):
    from pipeline.cli import run_cli

    import defend
    import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    if flag == "--out_dir":
        assert run_cli(main.main, T + ["--out_dir", str(blocker / "runs")]) == 2
    else:
        assert run_cli(defend.main, T + ["--defense", "prune", "--out_dir", str(tmp_path), flag, str(blocker)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flag} ") and "is a file, not a directory" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("script", ["sweep", "reproduce"])
def test_a_grid_whose_out_dir_is_a_file_is_one_line(tmp_path, capsys, script):
    from experiments import reproduce, sweep
    from pipeline.cli import run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    if script == "sweep":
        assert run_cli(sweep.main, ["--flags", f"--width 0.125 --out_dir {blocker}"]) == 2
    else:
        assert run_cli(reproduce.main, ["--out_dir", str(blocker), "--report", str(tmp_path / "report.md")]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: --out_dir {blocker} is a file, not a directory")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed after its first epoch: its out_dir, holding the staging directory with resume.pt."""
    out_dir = tmp_path_factory.mktemp("interrupted")
    process = signalled_after_first_epoch(out_dir, signal.SIGKILL)
    process.wait()
    assert (out_dir / f".{NAME}.staging" / "resume.pt").is_file()
    return out_dir


def signalled_after_first_epoch(out_dir, signum) -> subprocess.Popen:
    """A 6-epoch training process sent ``signum`` once its first epoch's resume.pt is written."""
    process = main_py(*T, "--epochs", "6", "--out_dir", str(out_dir), wait=False)
    resume = out_dir / f".{NAME}.staging" / "resume.pt"
    deadline = time.time() + 120
    while not resume.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    return process


def _crafted(path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/ml_mmdr_payload_ran",))

    torch.save({"model": Payload()}, path)


DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "missing a key": lambda path: torch.save({k: v for k, v in torch.load(path, weights_only=True).items()
                                              if k != "optimizer"}, path),
    "crafted": _crafted,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_unreadable_resume_state_is_one_line_and_starting_over_works(interrupted, tmp_path, damage, capsys):
    import shutil

    import main
    from pipeline.cli import run_cli
    from pipeline.config import RunConfig
    from pipeline.stages.train import resumable

    shutil.copytree(interrupted, tmp_path, dirs_exist_ok=True)
    DAMAGE[damage](tmp_path / f".{NAME}.staging" / "resume.pt")
    assert run_cli(main.main, T + ["--epochs", "6", "--out_dir", str(tmp_path), "--resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot resume: ") and "drop --resume to train the run from the start" in line
    assert "weights_only" not in line and not os.path.exists("/tmp/ml_mmdr_payload_ran")
    # the grid's path: not resumable, so it trains the run from the start
    config = RunConfig(data_name="digits", width=0.125, epochs=6, train_subset=100, out_dir=str(tmp_path))
    assert resumable(config.validate().resolve_defaults()) is False


@pytest.mark.parametrize("content", ["crafted", "a tensor", "a list"])
def test_a_model_file_that_is_not_a_checkpoint_is_one_line(trained, tmp_path, content, capsys):
    import shutil

    from pipeline.cli import run_cli

    import evaluate

    run = tmp_path / NAME
    shutil.copytree(trained / NAME, run)
    model = run / "model.pt"
    {"crafted": _crafted, "a tensor": lambda path: torch.save(torch.zeros(3), path),
     "a list": lambda path: torch.save([1, 2], path)}[content](model)
    assert run_cli(evaluate.main, T + ["--out_dir", str(tmp_path), "--num_samples", "20"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot load the run's model: ") and "retrain the run" in line
    assert "weights_only" not in line and not os.path.exists("/tmp/ml_mmdr_payload_ran")


def test_a_symlinked_run_directory_is_retrained_where_it_points(trained, tmp_path):
    import shutil

    import main
    from pipeline.cli import run_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(trained / NAME, elsewhere / "therun")
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    (out_dir / NAME).symlink_to(elsewhere / "therun")
    for epochs in ("2", "1"):  # twice: the second retrain once failed in the rename
        assert run_cli(main.main, T + ["--epochs", epochs, "--overwrite", "--out_dir", str(out_dir)]) == 0
        assert json.loads((out_dir / NAME / "config.json").read_text())["epochs"] == int(epochs)
    assert (out_dir / NAME).is_symlink() and sorted(path.name for path in out_dir.iterdir()) == [NAME]
    assert sorted(path.name for path in elsewhere.iterdir()) == [".therun.lock", "therun"]


def test_a_stage_does_not_delete_the_temporary_file_of_a_writer_in_flight(trained, tmp_path, capsys):
    """Another process (here one that holds the run's lock, as a defense that is writing does)
    owns the run: an evaluation started meanwhile is refused and leaves its file alone."""
    import shutil

    from pipeline.cli import run_cli

    import evaluate

    shutil.copytree(trained / NAME, tmp_path / NAME)
    in_flight = tmp_path / NAME / ".defense_prune.json.abc123.tmp"
    in_flight.write_text("{half a json")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                               "from pipeline.rundir import RunDir; "
                               "lock = RunDir(sys.argv[1]).locked(); lock.__enter__(); print('held', flush=True); "
                               "sys.stdin.read()", str(tmp_path / NAME), str(ROOT)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_cli(evaluate.main, T + ["--out_dir", str(tmp_path), "--num_samples", "20"]) == 2
        assert "is being written by host" in one_line(capsys.readouterr().err)
        assert in_flight.read_text() == "{half a json"
    finally:
        holder.communicate("")
    # with the writer gone (killed mid-write), its leftover is an orphan and the next stage removes it
    assert run_cli(evaluate.main, T + ["--out_dir", str(tmp_path), "--num_samples", "20", "--pool_sizes", "20",
                                       "--pool_ratios", "1.0", "--swd_projections", "10"]) == 0
    assert not in_flight.exists()


def test_sigterm_is_one_line_releases_the_lock_and_keeps_resume_state(tmp_path):
    process = signalled_after_first_epoch(tmp_path, signal.SIGTERM)
    resume = tmp_path / f".{NAME}.staging" / "resume.pt"
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert one_line(stderr).startswith("terminated (SIGTERM): the run's lock is released")
    assert resume.is_file()
    resumed = main_py(*T, "--epochs", "6", "--out_dir", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("script, extra", [("evaluate.py", ["--num_samples", "20"]),
                                           ("defend.py", ["--defense", "prune"])])
def test_a_read_only_run_directory_is_one_line_before_any_computing(trained, tmp_path, script, extra):
    """Root writes anywhere, so the process drops the capability that lets it (setpriv), as a user
    without write permission would be."""
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux)")
    shutil.copytree(trained / NAME, tmp_path / NAME)
    before = snapshot(tmp_path / NAME)
    (tmp_path / NAME).chmod(0o555)
    try:
        done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable,
                               script, *T, "--out_dir", str(tmp_path), *extra], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
    finally:
        (tmp_path / NAME).chmod(0o755)
    if "setpriv:" in done.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {done.stderr.strip()}")
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"error: {tmp_path / NAME} is not writable, and the "
                                     f"{'evaluate' if script == 'evaluate.py' else 'prune'} stage writes its results "
                                     f"there; make it writable, or copy the run to a writable directory and pass "
                                     f"that as --out_dir")
    assert snapshot(tmp_path / NAME) == before


def test_an_evaluation_that_cannot_write_its_record_leaves_the_previous_files(trained, tmp_path, monkeypatch, capsys):
    """evaluation.json marks the stage done; when it cannot be written (a full disk), evaluation.md
    returns to what it was, so the two never describe different evaluations."""
    import errno
    import shutil

    import evaluate
    import pipeline.rundir
    from pipeline.cli import run_cli

    shutil.copytree(trained / NAME, tmp_path / NAME)
    small = ["--num_samples", "20", "--pool_sizes", "20", "--pool_ratios", "1.0", "--swd_projections", "10"]
    assert run_cli(evaluate.main, T + ["--out_dir", str(tmp_path), *small]) == 0
    before = snapshot(tmp_path / NAME)

    def full(obj, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pipeline.rundir, "save_json", full)
    assert run_cli(evaluate.main, T + ["--out_dir", str(tmp_path), *small, "--num_samples", "25"]) == 1
    assert one_line(capsys.readouterr().err).startswith("error: No space left on device (")
    assert snapshot(tmp_path / NAME) == before


def test_an_empty_out_dir_is_one_line(tmp_path, capsys, monkeypatch):
    """An empty --out_dir would train into the working directory: refused by name."""
    import main
    from pipeline.cli import run_cli

    monkeypatch.chdir(tmp_path)
    assert run_cli(main.main, [*T, "--out_dir", ""]) == 2
    assert capsys.readouterr().err.strip() == "error: --out_dir is empty; give the directory runs are written to " \
                                              "(default: runs)"
    assert list(tmp_path.iterdir()) == []


def test_an_out_dir_under_the_home_is_expanded_as_the_data_path_is(tmp_path, monkeypatch):
    """'~/x' is the home's x (as --data_path expands it), not a directory named '~' here."""
    import main
    from pipeline.cli import run_cli

    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    assert run_cli(main.main, [*T, "--out_dir", "~/x"]) == 0
    assert (home / "x" / NAME / "metrics.json").is_file() and not (here / "~").exists()


def test_a_symlink_loop_at_the_run_path_is_one_line(tmp_path, capsys):
    import main
    from pipeline.cli import run_cli

    (tmp_path / NAME).symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(tmp_path / NAME)
    assert run_cli(main.main, [*T, "--out_dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "is a symbolic link that cannot be followed" in error


def test_a_config_json_that_parses_but_is_damaged_inside_is_one_line(tiny_run, tmp_path, capsys):
    """config.json with attack_params: null once gave a TypeError traceback from the evaluation."""
    import shutil

    import evaluate
    from pipeline.cli import run_cli

    argv, run_dir = tiny_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "attack_params": None}))
    assert run_cli(evaluate.main, argv[:-1] + [str(tmp_path)]) == 2  # the run's flags, --out_dir the copy's
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "config.json holds attack_params = None, which is not what a run records" in error


def test_a_metrics_json_with_a_score_that_is_not_a_number_is_one_line(tmp_path):
    from types import SimpleNamespace

    from experiments.sweep import score
    from pipeline.rundir import RunDir
    from utils.errors import UserError

    job = SimpleNamespace(run=RunDir(tmp_path / NAME))
    assert score({"ba": 0.5}, "ba", job) == "0.5000" and score({}, "asr", job) == "nan"
    with pytest.raises(UserError, match=r"metrics.json holds ba = 'x', not a number; delete it and retrain the run"):
        score({"ba": "x"}, "ba", job)


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_a_training_record_that_is_not_json_says_how_to_retrain_and_doing_that_works(trained, tmp_path, capsys, name):
    """A damaged config.json or metrics.json named "delete it and rerun its stage", which for
    config.json ended in "not a run directory (no config.json)", and retraining refused it even with
    --overwrite: the advice now is the command that writes it again, and that command works."""
    import shutil

    import main
    from pipeline.cli import run_cli
    from pipeline.rundir import RunDir
    from utils.errors import UserError

    shutil.copytree(trained / NAME, tmp_path / NAME)
    damaged = tmp_path / NAME / name
    damaged.write_text("{oops")
    with pytest.raises(UserError) as error:
        RunDir(tmp_path / NAME).read(name.split(".")[0])
    retrain = T + ["--out_dir", str(tmp_path)]
    if name == "config.json":
        advice = "; retrain the run: python main.py with the run's flags and --overwrite"
        assert run_cli(main.main, retrain) == 2  # where a researcher meets it: training the run again
        assert one_line(capsys.readouterr().err) == f"error: {error.value}"
        retrain.append("--overwrite")
    else:
        advice = "; delete it and retrain the run: python main.py with the run's flags"
        damaged.unlink()
    assert str(error.value).startswith(f"{damaged} is not valid JSON (") and str(error.value).endswith(advice)
    assert run_cli(main.main, retrain) == 0
    assert ("ba" if name == "metrics.json" else "run_name") in RunDir(tmp_path / NAME).read(name.split(".")[0])
