"""Sweeps through submitit: a 2-run grid on the local executor, skipping finished runs, resuming
interrupted ones; the Slurm array's sbatch header; bad input."""
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
    a stage is the one line on stderr (a 'stages: 0%' bar once came before it)."""
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "sweep.py"), "--data_name", "digits", "--jobs", "1",
                           "--flags", f"--epochs 1 --width 0.125 --train_subset 100 --lr 1e30 --out_dir {tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: the train stage of"), lines


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
