"""Sweeps through submitit: a 2-run grid on the local executor, skipping finished runs, resuming
interrupted ones; the Slurm array's sbatch header; bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.cli import run_cli
from pipeline.config import RunConfig
from pipeline.executors import SlurmOptions, slurm_parameters
from pipeline.rundir import RunDir
from pipeline.stages.train import RESUME_KEYS, resumable, staging_of

ROOT = Path(__file__).resolve().parents[1]
SHARED = "--width 0.125 --epochs 1 --train_subset 200"
# λ = 1e30 diverges in the first steps (TrainingDiverged: no model.pt), λ = 0 trains: the failing run comes first
DIVERGING_FIRST = ["--mlmmdr_lamb", "1e30", "0"]
BAD, GOOD = "digits_vgg11_patched_mlmmdr_1e+30_all_w0.125_n100", "digits_vgg11_patched_w0.125_n100"


def sweep(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "experiments/sweep.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_two_run_grid_runs_through_submitits_local_executor_and_is_skipped_when_done(tmp_path):
    flags = ["--attack_name", "patched", "blended", "--flags", f"{SHARED} --out_dir {tmp_path}", "--jobs", "2",
             "--threads", "1"]
    first = sweep(*flags)
    assert first.returncode == 0, first.stderr
    names = ["digits_vgg11_patched_w0.125_n200", "digits_vgg11_blended_w0.125_n200"]
    for name in names:
        assert (tmp_path / name / "model.pt").is_file()
        assert f"{name}: BA=" in first.stdout
    submitted = sorted(path.name for path in (tmp_path / "submitit").glob("*_result.pkl"))
    assert len(submitted) == 2  # one submitit job per run
    again = sweep(*flags)
    assert again.returncode == 0 and "2 runs, 0 with work to do" in again.stdout
    assert sorted(path.name for path in (tmp_path / "submitit").glob("*_result.pkl")) == submitted


def test_rbt_is_one_run_whatever_the_levels(tmp_path):
    from experiments.sweep import build_jobs, parse

    args = parse(["--mlmmdr_lamb", "0", "0.1", "--mlmmdr_layer", "all", "last", "--flags", f"--out_dir {tmp_path}"])
    assert sorted(job.config.run_name for job in build_jobs(args)) == [
        "digits_vgg11_patched", "digits_vgg11_patched_mlmmdr_0.1_all", "digits_vgg11_patched_mlmmdr_0.1_last"]


def test_an_interrupted_run_of_the_same_configuration_is_resumed(tmp_path):
    config = RunConfig(data_name="digits", out_dir=str(tmp_path)).resolve_defaults()
    staging = staging_of(RunDir.of(config))
    assert not resumable(config)
    staging.path.mkdir(parents=True)
    state = {key: 0 for key in RESUME_KEYS}  # what resumable() reads: every key, and the configuration
    torch.save({**state, "config_hash": config.config_hash()}, staging.file("resume"))
    assert resumable(config)
    torch.save({**state, "config_hash": "another"}, staging.file("resume"))
    assert not resumable(config)


def test_the_slurm_array_asks_for_the_partition_gpus_time_and_parallelism(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string("python -m task", tmp_path, map_count=20,
                               **slurm_parameters(SlurmOptions(partition="gpu", gpus=2, time=600), parallel=8))
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=600", "#SBATCH --array=0-19%8"):
        assert line in text


@pytest.mark.parametrize("argv, message", [
    (["--executor", "slurm"], "--executor slurm needs a Slurm cluster"),
    (["--flags", "--seed 3"], "--flags sets --seed, which is an axis of the sweep"),
    (["--jobs", "0"], "--jobs and --threads must be at least 1"),
    (["--model_name", "alexnet"], "unknown model 'alexnet'"),
])
def test_bad_sweeps_fail_with_one_line(argv, message, tmp_path, capsys):
    import shutil

    from experiments import sweep as sweep_module

    if "--executor" in argv and shutil.which("srun"):
        pytest.skip("this machine has Slurm")
    flags = argv if "--flags" in argv else argv + ["--flags", f"{SHARED} --out_dir {tmp_path}"]
    assert run_cli(sweep_module.main, flags) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error
    assert not any(tmp_path.glob("digits_*"))


def test_a_failed_stage_without_a_terminal_is_one_line(tmp_path):
    """No progress bar is drawn where stderr is not a terminal (a log, a pipe, CI), so the failure of
    a stage is the one line on stderr (a 'stages: 0%' bar once came before it); in this process
    (--jobs 1) the run after the failed one still trains."""
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "sweep.py"), "--data_name", "digits", "--jobs", "1",
                           *DIVERGING_FIRST, "--flags", f"--epochs 1 --width 0.125 --train_subset 100 --out_dir {tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: 1 run(s) failed: {BAD}; "), lines
    assert f"the train stage of {BAD} failed (TrainingDiverged" in lines[0]
    assert (tmp_path / GOOD / "model.pt").is_file()


def test_a_run_interrupted_on_another_rank_count_is_started_over_where_its_result_depends_on_it(tmp_path):
    """A sweep rerun on another number of GPUs: resume.pt records the world size, and a run whose
    result depends on it (no --sync_bn with --mmd_sync global) is trained again, not failed."""
    from dataclasses import replace

    config = RunConfig(data_name="digits", out_dir=str(tmp_path)).resolve_defaults()
    staging = staging_of(RunDir.of(config))
    staging.path.mkdir(parents=True)
    state = {key: 0 for key in RESUME_KEYS}
    torch.save({**state, "config_hash": config.config_hash(), "world_size": 2}, staging.file("resume"))
    assert resumable(config, world_size=2) and not resumable(config, world_size=1)
    global_batch = replace(config, sync_bn=True, mmd_sync="global")  # the same step on any rank count
    torch.save({**state, "config_hash": global_batch.config_hash(), "world_size": 2}, staging.file("resume"))
    assert resumable(global_batch, world_size=1) and resumable(global_batch, world_size=4)



def test_a_failed_run_is_recorded_and_the_grid_goes_on_without_retrying_it(tmp_path):
    """--keep_going (the default): the run after a failed one still trains, the summary names the
    failure, and the command ends with one error line; a rerun leaves the failed run alone unless
    --retry_failed, so one bad cell cannot block a grid. Local jobs (--jobs 2) here; the in-process
    path (--jobs 1) is test_a_failed_stage_without_a_terminal_is_one_line's."""
    flags = [*DIVERGING_FIRST, "--jobs", "2", "--threads", "1", "--flags",
             f"--width 0.125 --epochs 1 --train_subset 100 --out_dir {tmp_path}"]
    first = sweep(*flags)
    assert first.returncode == 2 and (tmp_path / GOOD / "model.pt").is_file(), first.stderr
    assert f"{BAD}: FAILED (the train stage of {BAD} failed (TrainingDiverged" in first.stdout
    assert f"{GOOD}: BA=" in first.stdout
    error = first.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: 1 run(s) failed: {BAD}; the first: the train stage of "), error
    record = json.loads((tmp_path / "logs" / f"{BAD}.failure.json").read_text())
    assert record["run_name"] == BAD and "TrainingDiverged" in record["reason"]
    log = tmp_path / "logs" / f"{BAD}.train.log"
    trained_at = log.stat().st_mtime_ns

    again = sweep(*flags)
    assert again.returncode == 2 and "2 runs, 1 with work to do" in again.stdout
    assert again.stderr.splitlines()[0] == f"leaving alone 1 run(s) that failed before: {BAD} (--retry_failed tries " \
                                           f"them again)"
    assert "(1 left alone: they had failed before)" in again.stderr and log.stat().st_mtime_ns == trained_at

    retried = sweep(*flags, "--retry_failed")
    assert retried.returncode == 2 and "leaving alone" not in retried.stderr
    assert log.stat().st_mtime_ns != trained_at  # tried again (and it diverges again)


def test_fail_fast_stops_the_grid_at_the_first_failed_run(tmp_path):
    done = sweep(*DIVERGING_FIRST, "--fail_fast", "--threads", "1", "--flags",
                 f"--width 0.125 --epochs 1 --train_subset 100 --out_dir {tmp_path}")
    assert done.returncode == 2 and done.stderr.startswith(f"error: the train stage of {BAD} failed"), done.stderr
    assert not (tmp_path / GOOD).exists()  # never started
    assert (tmp_path / "logs" / f"{BAD}.failure.json").is_file()  # recorded all the same


def test_a_run_that_succeeds_clears_its_recorded_failure(tmp_path):
    from pipeline.jobs import Job, record_failure, recorded_failure, run_job

    config = RunConfig(data_name="digits", width=0.125, epochs=1, train_subset=100, out_dir=str(tmp_path),
                       progress=False).resolve_defaults()
    record_failure(tmp_path / "logs", config.run_name, "the train stage failed (on purpose)")
    assert recorded_failure(tmp_path / "logs", config.run_name) == "the train stage failed (on purpose)"
    run_job(Job(config, [("train", None)]), tmp_path / "logs", threads=1)
    assert recorded_failure(tmp_path / "logs", config.run_name) is None


KILLED_DRIVER_FLAGS = "--width 0.125 --epochs 200 --train_subset 100 --eval_every 200"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads processes from Linux's /proc")
def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    """kill -9 of a --jobs 2 sweep runs no handler of the driver: its local jobs (submitit's
    controllers and the tasks that train) must still stop, so that they do not train on unwatched
    holding their runs' locks."""
    import time

    from pipeline.executors import _descendants
    from tests.test_executors import alive

    driver = subprocess.Popen([sys.executable, "experiments/sweep.py", "--attack_name", "patched", "blended", "--jobs",
                               "2", "--threads", "1", "--flags", f"{KILLED_DRIVER_FLAGS} --out_dir {tmp_path}"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = tmp_path / "logs"
    deadline = time.time() + 120
    while len(list(logs.glob("*.train.log"))) < 2 and time.time() < deadline:  # both tasks are training
        time.sleep(0.2)
    workers = _descendants(driver.pid)
    driver.kill()
    driver.wait()
    assert len(workers) >= 4  # two controllers, each with its task
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


@pytest.mark.skipif(__import__("shutil").which("srun") is not None, reason="this machine has Slurm")
def test_slurm_without_slurm_is_refused_before_anything_is_written(tmp_path):
    out_dir = tmp_path / "runs"
    done = sweep("--executor", "slurm", "--flags", f"--width 0.125 --out_dir {out_dir}")
    assert done.returncode == 2 and done.stderr.startswith("error: --executor slurm needs a Slurm cluster")
    assert not out_dir.exists()  # no logs/ and no submitit/ left behind
