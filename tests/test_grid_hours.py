"""benchmarks/grid_hours.py: the README's grid is 28 runs an architecture (not every registered
attack), a run's cost is its training, its per-epoch BA/ASR and its evaluate stage at the given
rates, the wall time is a schedule of the runs on N GPUs, and the timed path is the sweep's flags."""
import json

import pytest

from benchmarks.grid_hours import (counted_flops, evaluations, grid_runs, main, makespan, run_seconds,
                                   write_cifar10_shaped)
from pipeline.cli import run_cli


def test_the_grid_is_the_readmes_28_runs_an_architecture():
    runs = grid_runs("vgg11", "--amp --channels_last")
    assert len(runs) == 28 and len({run.run_name for run in runs}) == 28
    assert {run.attack_name for run in runs} == {"patched", "blended", "sig", "warped"}  # TABLE 1's, not all 7
    assert sum(run.mlmmdr_lamb == 0 for run in runs) == 4  # RBT once an attack, whatever the levels
    assert {(run.mlmmdr_lamb, run.mlmmdr_layer) for run in runs if run.mlmmdr_lamb} == {
        (lamb, layer) for lamb in (0.1, 0.2, 0.3) for layer in ("all", "last")}
    assert all(run.epochs == 100 and run.eval_every == 1 and run.amp and run.channels_last and not run.compile
               for run in runs)  # CIFAR-10's defaults, with the sweep's flags


def test_a_run_costs_its_training_its_monitoring_and_its_evaluate_stage():
    run = grid_runs("vgg11", "--epochs 10 --eval_every 4")[0]  # patched: 55,000 images an epoch
    assert evaluations(10, 4) == 3 and evaluations(100, 1) == 100 and evaluations(8, 4) == 2
    seconds = run_seconds(run, {"train": 1000.0, "eval": 19_000.0}, evaluate_s=60.0)
    assert seconds["train"] == pytest.approx(10 * 55_000 / 1000)
    assert seconds["monitor"] == pytest.approx(3 * 19_000 / 19_000)  # 10,000 clean + 9,000 triggered, 3 times
    assert seconds["total"] == pytest.approx(550 + 3 + 60)


def test_the_wall_time_hands_the_runs_longest_first_to_the_gpus():
    assert makespan([3, 5, 3, 4, 3], slots=2) == 10  # 5 | 4, then 3 on the 4 (7), 3 on the 5 (8), 3 on the 7
    assert makespan([10, 1, 1], slots=8) == 10          # more GPUs than runs: the longest run
    assert makespan([2.0] * 16, slots=8) == 4.0


def test_training_counts_forward_and_backward_flops():
    flops = counted_flops("vgg11", 0.125)
    assert 2.5 < flops["train"] / flops["forward"] < 3.5  # the backward costs about twice the forward


def test_the_cifar10_shaped_dataset_loads_as_cifar10(tmp_path):
    import datasets

    data = datasets.build("cifar10", data_path=str(write_cifar10_shaped(tmp_path)))
    assert tuple(data.train_x.shape) == (50_000, 3, 32, 32) and tuple(data.test_x.shape) == (10_000, 3, 32, 32)
    assert data.train_y.bincount().tolist() == [5000] * 10


def test_an_estimate_prints_the_grid_hours(capsys):
    assert run_cli(main, ["--model_name", "vgg11", "resnet18", "--width", "0.125", "--assume_tflops", "10",
                          "--evaluate_s", "60", "--gpus", "8", "--slurm_jobs", "56"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == 56 and result["estimate"]
    durations = [seconds for cost in result["architectures"] for seconds in cost["run_seconds"]]
    assert result["gpu_hours"] == pytest.approx(sum(durations) / 3600, abs=0.05)
    assert result["slurm_wall_hours"] == pytest.approx(max(durations) / 3600, abs=0.05)  # one task a run
    assert result["node_wall_hours"] >= result["gpu_hours"] / 8 - 0.05


@pytest.mark.parametrize("flags, message", [
    (["--model_name", "vgg12"], "error: --model_name has no architecture vgg12"),
    (["--flags", "--amp --epochs x"], "error: argument --epochs: invalid int value"),
    (["--assume_tflops", "0"], "error: --assume_tflops must be positive, got 0.0"),
    (["--gpus", "0"], "error: --gpus must be at least 1, got 0"),
])
def test_bad_input_is_one_line(flags, message, capsys):
    assert run_cli(main, flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines



def test_the_readmes_grid_hours_are_the_committed_estimates():
    """The README states the grid's hours; they are results/grid_hours.json's, so they cannot drift
    from the arithmetic that produced them (regenerate the file, then the sentence, together)."""
    import re

    from tests.conftest import ROOT

    recorded = json.loads((ROOT / "results" / "grid_hours.json").read_text())
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    stated = re.search(r"\*\*([\d.]+) GPU-hours: about ([\d.]+) hours on one 8-GPU node and ([\d.]+) hours as the "
                       r"Slurm array\*\*", readme)
    assert stated, "the README's grid hours sentence is gone"
    assert [float(value) for value in stated.groups()] == [
        recorded["gpu_hours"], recorded["node_wall_hours"], recorded["slurm_wall_hours"]]
    assert recorded["estimate"] and recorded["runs"] == 112 and recorded["node_gpus"] == 8 \
        and recorded["slurm_jobs"] == 32
    assert re.sub(r"\s+", " ", recorded["command"]) in readme
