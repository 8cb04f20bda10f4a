"""Kill a run with SIGKILL during its second epoch, resume it, and get exactly the numbers of an
uninterrupted run (same seed, same CPU thread count)."""
import json
import os
import signal
import subprocess
import sys
import time

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
    checkpoint = out_dir / NAME / "resume.pt"
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
    assert not (killed / NAME / "model.pt").exists() and (killed / NAME / "resume.pt").is_file()
    resumed = train(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((killed / NAME / "metrics.json").read_text())
    assert len(result["history"]) == 3
    assert without_seconds(result["history"]) == without_seconds(whole["history"])
    assert (result["ba"], result["asr"]) == (whole["ba"], whole["asr"])
    assert not (killed / NAME / "resume.pt").exists()  # complete: nothing left to resume
    again = train(killed, "--resume")
    assert again.returncode == 2 and "nothing to resume in" in again.stderr and "the run is complete" in again.stderr


def test_resume_without_an_incomplete_run_is_a_clear_error(tmp_path):
    process = train(tmp_path, "--resume", "--epochs", "1")
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "nothing to resume in" in process.stderr
