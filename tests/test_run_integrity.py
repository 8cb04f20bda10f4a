"""Kill a run with SIGKILL during its second epoch, resume it, and get exactly the numbers of an
uninterrupted run (same seed, same CPU thread count)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

RUN = ["--data_name", "digits", "--width", "0.25", "--epochs", "3", "--train_subset", "300", "--milestones",
       "--no_progress", "--mlmmdr_lamb", "0.1"]
NAME = "digits_vgg11_patched_mlmmdr_0.1_all_w0.25_n300"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train(out_dir, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *RUN, "--out_dir", str(out_dir), *extra], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)


def without_seconds(history: list) -> list:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in history]


def kill_after_first_epoch(out_dir) -> None:
    process = subprocess.Popen([sys.executable, "main.py", *RUN, "--out_dir", str(out_dir)], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out_dir / f".{NAME}.staging" / "resume.pt"
    deadline = time.time() + 120
    while not checkpoint.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # during epoch 2: epoch 1's checkpoint has just been written
    process.wait()


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_numbers(tmp_path):
    assert train(tmp_path / "whole").returncode == 0
    whole = json.loads((tmp_path / "whole" / NAME / "metrics.json").read_text())
    killed = tmp_path / "killed"
    kill_after_first_epoch(killed)
    staging = killed / f".{NAME}.staging"
    assert not (killed / NAME).exists() and (staging / "resume.pt").is_file()  # nothing half-done in place
    resumed = train(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((killed / NAME / "metrics.json").read_text())
    assert len(result["history"]) == 3
    assert without_seconds(result["history"]) == without_seconds(whole["history"])
    assert (result["ba"], result["asr"]) == (whole["ba"], whole["asr"])
    # no staging left; the lock file stays (released by the kernel, it holds nothing)
    assert not staging.exists() and sorted(p.name for p in killed.iterdir()) == [f".{NAME}.lock", NAME]
    again = train(killed, "--resume")
    assert again.returncode == 2 and "nothing to resume in" in again.stderr and "the run is complete" in again.stderr


def test_resume_without_an_incomplete_run_is_a_clear_error(tmp_path):
    process = train(tmp_path, "--resume", "--epochs", "1")
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "nothing to resume in" in process.stderr
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".staging")] == []  # nothing left behind


def test_two_processes_cannot_write_one_run(tmp_path):
    """The second process exits with the lock message; the first finishes a whole directory."""
    args = [sys.executable, "main.py", *RUN, "--epochs", "6", "--out_dir", str(tmp_path)]
    first = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / f".{NAME}.lock"
    deadline = time.time() + 120
    while not lock.is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert first.wait() == 0, first.stderr.read()
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0 and "is being written by host " in second.stderr
    assert f" pid {first.pid} (lock " in second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.lock", NAME]
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == ["config.json", "history.csv", "metrics.json",
                                                                   "model.pt"]
    assert json.loads((tmp_path / NAME / "config.json").read_text())["epochs"] == 6


@pytest.mark.parametrize("left", ["dead pid", "other host", "live unrelated pid"])
def test_a_lock_file_nobody_holds_is_taken_and_orphans_are_removed(tmp_path, left):
    """The lock is the kernel's (flock): a lock file left by a dead process, by a process on
    another node, or naming a pid now used by an unrelated live process holds nothing."""
    from pipeline.cli import run_cli
    import main

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    entry = {"dead pid": dead.stdout.strip(), "other host": "host node-17 pid 4242",
             "live unrelated pid": f"host localhost pid {os.getppid()}"}[left]
    (tmp_path / f".{NAME}.lock").write_text(entry)
    staging = tmp_path / f".{NAME}.staging"
    staging.mkdir()
    (staging / ".history.csv.x1y2.tmp").write_text("half a file")  # a writer killed mid-write
    assert run_cli(main.main, RUN + ["--epochs", "1", "--out_dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.lock", NAME]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / NAME).iterdir())


def test_a_held_lock_is_refused_whatever_its_file_says(tmp_path):
    """Another process holds the kernel lock: the run is refused at once with one line, even though
    the lock file names no live process of this host."""
    from filelock import FileLock

    from utils.errors import UserError
    from utils.io import exclusive

    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); "
                               "lock.acquire(); print('held', flush=True); sys.stdin.read()", str(lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock.write_text("host node-17 pid 4242")
        with pytest.raises(UserError, match=r"the run is being written by host node-17 pid 4242 \(lock "):
            with exclusive(lock, "the run"):
                pass
    finally:
        holder.communicate("")
    with exclusive(lock, "the run"):  # its holder exited: the kernel released it
        assert FileLock(str(lock), timeout=0).is_locked is False


def test_atomic_files_get_the_umask_mode(tmp_path, monkeypatch):
    """FILE_MODE is the umask's, read when utils.io is imported: set here as an import under umask
    027 would set it (a reload of utils.io would give other modules a second UnreadableCheckpoint
    class, which their except clauses would not catch)."""
    import utils.io
    from utils.io import save_json

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(utils.io, "FILE_MODE", 0o666 & ~utils.io._umask())
        utils.io.save_json({"a": 1}, tmp_path / "x.json")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
        monkeypatch.undo()
    save_json({"a": 1}, tmp_path / "y.json")
    assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o666 & ~previous


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_users_file_at_the_run_path_is_refused_and_kept(tmp_path, capsys, kind):
    """Promoting a trained run replaces whatever is at its path: a user's file there, or a directory
    of files that is not a run, must stop training before it starts, and stay as it was."""
    import main
    from pipeline.cli import run_cli

    target = tmp_path / NAME
    if kind == "file":
        target.write_text("my notes")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("my notes")
    assert run_cli(main.main, [*RUN, "--epochs", "1", "--out_dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "exists and is not a run directory" in error and "move it away" in error
    assert (target.read_text() if kind == "file" else (target / "notes.txt").read_text()) == "my notes"
