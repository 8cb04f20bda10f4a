"""main.py end to end on digits, and the one-line errors on bad input."""
import json
import subprocess
import sys

import pytest
import torch

import main
from tests.conftest import ROOT
from pipeline.cli import run_cli
from utils.io import load_checkpoint

FAST = ["--data_name", "digits", "--width", "0.125", "--epochs", "1", "--train_subset", "300",
        "--no_progress"]


def test_main_trains_one_epoch_and_writes_a_loadable_run(tmp_path, capsys):
    code = run_cli(main.main, FAST + ["--mlmmdr_lamb", "0.1", "--out_dir", str(tmp_path)])
    assert code == 0
    run_dir = tmp_path / "digits_vgg11_patched_mlmmdr_0.1_all_w0.125_n300"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "history.csv", "metrics.json", "model.pt"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{run_dir.name}: BA=") and "ASR=" in out[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["method"] == "ML-MMDR" and config["epochs"] == 1 and config["batch_size"] == 64
    assert config["milestones"] == [] and config["ce_reduction"] == "split"  # 1 epoch: no decay point inside
    assert config["resolved"]["poisoned"] == 30 and config["resolved"]["training_set_size"] == 330
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["history"][0]) >= {"ce", "mmd_s1", "mmd_s2", "mmd_s3", "loss", "ba", "asr"}
    # the regulariser really acts: most batches of 64 hold both groups, and its MMD² is positive
    assert metrics["history"][0]["mmd_active_steps"] >= 2 and metrics["history"][0]["mmd_s3"] > 0
    checkpoint = load_checkpoint(run_dir / "model.pt")
    assert set(checkpoint) == {"state_dict", "config", "metrics"}
    assert checkpoint["metrics"]["ba"] == metrics["ba"]
    import models

    model = models.build("vgg11", num_classes=10, width=0.125)
    model.load_state_dict(checkpoint["state_dict"])
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,lr,ce")


def test_same_seed_same_numbers(tmp_path):
    results = []
    for name in ("a", "b"):
        assert run_cli(main.main, FAST + ["--out_dir", str(tmp_path / name)]) == 0
        results.append(json.loads(next((tmp_path / name).glob("*/metrics.json")).read_text()))
    assert results[0]["history"][0]["ce"] == results[1]["history"][0]["ce"]
    assert results[0]["ba"] == results[1]["ba"]


def test_regulariser_survives_batches_without_poison(tmp_path):
    """Batch size 8 in Algorithm 1's random batches: many hold fewer than 2 samples of a group;
    training goes on. Gathered (what auto picks here: 0.7 poisoned images per batch on average),
    the term acts."""
    argv = FAST + ["--mlmmdr_lamb", "0.3", "--batch_size", "8", "--train_subset", "80"]
    with pytest.warns(UserWarning, match="the MMD term was active in none"):
        code = run_cli(main.main, argv + ["--poison_batching", "random", "--out_dir", str(tmp_path / "random")])
    assert code == 0
    metrics = json.loads(next((tmp_path / "random").glob("*/metrics.json")).read_text())
    assert all(torch.isfinite(torch.tensor(metrics["history"][0][key])) for key in ("loss", "mmd_s1"))
    assert metrics["mmd_active_steps"] == 0
    assert run_cli(main.main, argv + ["--out_dir", str(tmp_path / "auto")]) == 0
    gathered = json.loads(next((tmp_path / "auto").glob("*/metrics.json")).read_text())
    assert gathered["mmd_active_steps"] > 0
    config = json.loads(next((tmp_path / "auto").glob("*/config.json")).read_text())
    assert config["resolved"]["poisoned_batches_gathered"] is True


def test_a_collapsed_model_is_said_to_be_collapsed(tmp_path, capsys):
    """lr 1e6 on two batches blows the weights up without making them infinite: every clean image
    goes to class 0, the target, which would read as ASR = 1."""
    argv = FAST + ["--lr", "1e6", "--train_subset", "100", "--out_dir", str(tmp_path)]
    with pytest.warns(UserWarning, match="classifies 100% of the clean test images as 0"):
        assert run_cli(main.main, argv) == 0
    assert "collapsed: most clean images → 0, the ASR means nothing" in capsys.readouterr().out
    assert json.loads(next(tmp_path.glob("*/metrics.json")).read_text())["collapsed_to_class"] == 0


def test_a_diverged_run_fails_and_is_never_measured(tmp_path, capsys):
    """--lr 1e6 makes the loss NaN within a few steps: one line naming the step and the likely
    cause, exit 2, failed.json instead of a result, and evaluate refuses the run."""
    argv = FAST + ["--lr", "1e6", "--out_dir", str(tmp_path)]
    assert run_cli(main.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged at epoch 1, step ")
    assert "loss=nan" in err[0] and "lr=1e+06 is likely too large" in err[0]
    run_dir = next(tmp_path.iterdir())
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "failed.json"]
    import evaluate

    assert run_cli(evaluate.main, argv) == 2
    assert "failed to train (training diverged" in capsys.readouterr().err


def test_a_regulariser_that_never_acts_is_warned_about(tmp_path, capsys):
    """Batches of 4 never hold 2 clean target-class and 2 poisoned samples at once."""
    argv = FAST + ["--mlmmdr_lamb", "0.1", "--batch_size", "4", "--train_subset", "80", "--out_dir", str(tmp_path)]
    with pytest.warns(UserWarning, match="the MMD term was active in none of epoch 1's 22 steps"):
        assert run_cli(main.main, argv) == 0
    history = json.loads(next(tmp_path.glob("*/metrics.json")).read_text())["history"]
    assert history[0]["mmd_active_steps"] == 0


def test_a_directory_holding_another_configuration_is_refused_unless_overwritten(tmp_path, capsys):
    """The run name omits the schedule, so --epochs 2 names the 1-epoch run's directory: training
    there would mix two runs' files."""
    argv = FAST + ["--out_dir", str(tmp_path)]
    assert run_cli(main.main, argv) == 0
    run_dir = next(tmp_path.iterdir())
    (run_dir / "evaluation.json").write_text("{}")  # a result of the 1-epoch model
    before = (run_dir / "model.pt").read_bytes()
    capsys.readouterr()
    assert run_cli(main.main, argv + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with another configuration (epochs 1 → 2, milestones [] → [1])" in err[0] and "--overwrite" in err[0]
    assert (run_dir / "model.pt").read_bytes() == before
    assert run_cli(main.main, argv + ["--epochs", "2", "--overwrite"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    assert not (run_dir / "evaluation.json").exists()  # the old model's result went with it
    assert run_cli(main.main, argv + ["--epochs", "2"]) == 0  # the same configuration again: replaced in place


def test_an_out_dir_that_cannot_hold_runs_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert run_cli(main.main, FAST + ["--out_dir", str(a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out_dir {a_file} is a file, not a directory")


BAD_INPUTS = [
    (["--data_name", "mnist"], "unknown dataset 'mnist'; choose one of"),
    (["--model_name", "vgg19"], "unknown model 'vgg19'; choose one of"),
    (["--attack_name", "lira"], "unknown attack 'lira'; choose one of"),
    (["--kernel", "rbf"], "unknown kernel 'rbf'; choose one of"),
    (["--data_name", "fmnist"], "--data_path is required for fmnist"),
    # the command a reader of the paper types first: the default dataset is CIFAR-10, which --download fetches
    (["--mlmmdr_lamb", "0.1", "--data_name", "cifar10"], "; or add --download to let torchvision fetch it"),
    (["--data_name", "gtsrb"], "; or add --download to let torchvision fetch it"),
    (["--data_name", "cifar10", "--data_path", "/nonexistent"], "does not exist"),
    (["--mlmmdr_lamb", "-0.1"], "--mlmmdr_lamb must be ≥ 0"),
    (["--poison_ratio", "0"], "--poison_ratio must be in (0, 1]"),
    (["--poison_ratio", "1.5"], "--poison_ratio must be in (0, 1]"),
    (["--target", "10"], "--target 10 is outside digits's classes 0..9"),
    (["--mlmmdr_layer", "first"], "--mlmmdr_layer must be one of all, last, got first"),
    (["--attack_name", "blended", "--blend_alpha", "2"], "--blend_alpha must be in (0, 1], got 2.0"),
    (["--width", "0"], "--width must be in (0, 16], got 0.0"),
    (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    (["--width", "inf"], "--width must be a finite number, got inf"),
    (["--seed", "-1"], "--seed must be in [0, 2147483647], got -1"),
    (["--train_subset", "5"], "--train_subset must hold at least one image per class (10 for digits), got 5"),
    (["--run_name", "../x"], "--run_name must be a non-empty name without path separators"),
    (["--run_name", ""], "--run_name must be a non-empty name without path separators"),
    (["--momentum", "nan"], "--momentum must be a finite number, got nan"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS)
def test_bad_input_is_one_line_and_leaves_no_run(tmp_path, capsys, extra, message):
    argv = ["--data_name", "digits"] + extra + ["--out_dir", str(tmp_path / "runs"), "--epochs", "1"]
    assert run_cli(main.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert run_cli(main.main, ["--data_name", "digits", "--device", "cuda", "--out_dir", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_corrupt_dataset_through_the_real_cli(tmp_path):
    """The real process: exit status 2, one line on stderr, no traceback, no run directory."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"\x80\x04corrupt")
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--data_name", "cifar10", "--data_path",
                           str(tmp_path), "--out_dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", ["main.py", "evaluate.py", "defend.py", "visualize.py", "experiments/reproduce.py",
                                    "experiments/sweep.py"])
def test_every_script_prints_its_help(script):
    """argparse formats help texts with %: a parameter whose help says "1%" once crashed evaluate.py --help."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("usage: ")
