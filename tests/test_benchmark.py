"""benchmarks/train_step.py and grid_hours.py: the training-set size the grid hours use is the one
PoisonedData trains on (WaNet's noise images included), DDP runs on the device asked for, and every rate in the JSON
names that device; and every benchmark's flags are declared parameters, a bad one a line."""
import json
import subprocess
import sys

import pytest
import torch

import attacks
from attacks.poisoning import MODES, PoisonedData
from benchmarks.grid_hours import CIFAR10_TRAIN_IMAGES, training_set_size
from benchmarks.train_step import ddp_world_size, main, mmd_gather_traffic
from tests.conftest import ROOT
from utils.errors import ParameterError, UserError

# A tiny configuration: every timed part runs once on a small model, batch and MMD.
TINY = ["--width", "0.125", "--batch_size", "16", "--steps", "1", "--warmup", "0", "--mmd_n", "8", "--mmd_d", "16",
        "--adv_embed_d_epochs", "1",
        "--skip_broadcast", "--paths", "plain", "--threads", "2"]


def test_wanet_trains_on_its_noise_images_too():
    """The paper's 10% poisoned copies on CIFAR-10's 50,000; WaNet adds 2 noise images per poisoned one."""
    poisoned = CIFAR10_TRAIN_IMAGES // 10
    cross_ratio = attacks.default_params("warped")["wanet_cross_ratio"]
    assert training_set_size(CIFAR10_TRAIN_IMAGES, "patched", 0.1) == CIFAR10_TRAIN_IMAGES + poisoned
    assert training_set_size(CIFAR10_TRAIN_IMAGES, "warped", 0.1) == CIFAR10_TRAIN_IMAGES + poisoned * (1 + cross_ratio)
    assert training_set_size(CIFAR10_TRAIN_IMAGES, "warped", 0.1, params={"wanet_cross_ratio": 0.0}) == (
        CIFAR10_TRAIN_IMAGES + poisoned)


@pytest.mark.parametrize("attack", attacks.NAMES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.45])
def test_the_size_is_the_poisoned_sets_length(attack, mode, ratio):
    """Counted without a dataset, the size equals len(PoisonedData) on 100 fake images, the noise pool
    running short at the larger ratios (WaNet wants 2 noise images per poisoned one)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(100) % 10
    built = attacks.build(attack)
    if built.source_classes is not None and ratio * len(images) > sum(
            int((labels == source).sum()) for source in built.source_classes):
        with pytest.raises(ParameterError, match="source classes"):  # a question of the labels, which only PoisonedData has
            PoisonedData(images, labels, built, poison_ratio=ratio, mode=mode)
        return
    poisoned = round(ratio * len(images))
    if round(built.cover_per_poison * poisoned) > len(images) - poisoned:  # covers must be other images
        with pytest.raises(ParameterError, match="cover images"):
            PoisonedData(images, labels, built, poison_ratio=ratio, mode=mode)
        return
    data = PoisonedData(images, labels, built, poison_ratio=ratio, mode=mode)
    assert training_set_size(len(images), attack, ratio, mode) == len(data)


@pytest.mark.parametrize("call, parameter", [
    (lambda: training_set_size(0, "patched", 0.1), "train_size"),
    (lambda: training_set_size(100, "patched", 0.0), "poison_ratio"),
    (lambda: training_set_size(100, "patched", 0.001), "poison_ratio"),
    (lambda: training_set_size(100, "patched", 0.1, mode="swap"), "poison_mode"),
])
def test_bad_sizes_name_the_parameter(call, parameter):
    with pytest.raises(ParameterError) as error:
        call()
    assert error.value.parameter == parameter and "\n" not in str(error.value)


def test_an_unknown_attack_is_one_line():
    with pytest.raises(UserError, match="unknown attack 'nope'"):
        training_set_size(100, "nope", 0.1)


@pytest.mark.parametrize("device, requested, gpus, ranks", [
    ("cpu", 3, 0, 3),    # gloo processes on the CPU, as many as asked
    ("cuda", 2, 8, 2),   # no more than asked
    ("cuda", 4, 2, 2),   # one rank per GPU: no more than the visible GPUs
])
def test_ddp_ranks(device, requested, gpus, ranks):
    assert ddp_world_size(torch.device(device), requested, gpus) == (ranks, None)


@pytest.mark.parametrize("gpus", [0, 1])
def test_ddp_on_fewer_than_two_gpus_is_skipped_with_the_reason(gpus):
    ranks, why = ddp_world_size(torch.device("cuda"), 2, gpus)
    assert ranks == 0 and f"{gpus} visible" in why


def test_a_cpu_run_times_everything_on_the_cpu(capsys):
    """The JSON of a tiny CPU run: DDP over gloo and its speed-up against the CPU's own rate (the
    grid's hours are grid_hours.py's, not a rate divided into a grid of every attack)."""
    assert main(TINY + ["--device", "cpu", "--ddp_ranks", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    ddp = (result["ddp_device"], result["ddp_backend"], result["ddp_ranks"])
    assert result["device"] == "cpu" and ddp == ("cpu", "gloo", 2)
    rate = result["images_per_s"]["plain"]
    assert result["ddp_speedup_vs_one_process"] == round(result["ddp_images_per_s"] / rate, 3)
    assert "cifar10_grid_hours" not in result
    assert result["mmd_gather"]["ranks"] == 2 and result["mmd_gather"]["batches"] == 1
    assert set(result["ratio_vs_rbt"]) == {"mmd", "wasserstein", "adv_embed"}  # every regulariser, against RBT
    assert result["ratio_vs_rbt"]["mmd"] == result["ratio_mlmmdr_vs_rbt"]
    assert result["adv_embed_discriminator_s"] > 0


def test_the_gather_traffic_is_the_shards_against_the_used_rows():
    """VGG-11 at width 0.125 has 32·8·8 + 64·4·4 + 64·2·2 = 3328 float32 features a sample at s1–s3:
    every rank's whole shard (32 of 64 rows on 2 ranks) in three collectives before, a fifth or so
    of it in one now."""
    from types import SimpleNamespace

    args = SimpleNamespace(model_name="vgg11", width=0.125, batch_size=64, attack_name="patched", warmup=1, steps=3)
    traffic = mmd_gather_traffic(args, 2)
    assert traffic["all_rows_bytes"] == 32 * 3328 * 4 and traffic["batches"] == 4
    assert 0 < traffic["used_rows_bytes"] < traffic["all_rows_bytes"] / 2
    assert traffic["collectives"] == {"all_rows": 3, "used_rows": 1}


@pytest.mark.parametrize("flags, message", [
    (["--device", "gpu"], "error: --device must be auto, cpu or cuda, got 'gpu'"),
    (["--attack_name", "nope"], "error: unknown attack 'nope'"),
    (["--steps", "0"], "error: --steps must be at least 1, got 0"),
])
def test_bad_input_is_one_line(flags, message):
    done = subprocess.run([sys.executable, "benchmarks/train_step.py", *TINY, "--ddp_ranks", "0", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(message)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_run_times_every_rate_on_the_gpu():
    """--device cuda: the steps, the fast path and DDP (NCCL, one rank per GPU; skipped, saying why,
    on one GPU) all on CUDA, so the speed-up divides a GPU rate by a GPU rate."""
    done = subprocess.run([sys.executable, "benchmarks/train_step.py", *TINY, "--device", "cuda", "--ddp_ranks", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device"] == "cuda" and result["ddp_device"] == "cuda"
    assert result["images_per_s"]["plain"] > 0
    if torch.cuda.device_count() >= 2:
        assert (result["ddp_backend"], result["ddp_ranks"]) == ("nccl", 2) and result["ddp_images_per_s"] > 0
        speedup = result["ddp_images_per_s"] / result["images_per_s"]["plain"]
        assert result["ddp_speedup_vs_one_process"] == round(speedup, 3)
    else:
        assert "ddp_images_per_s" not in result and "ddp_speedup_vs_one_process" not in result
        assert "needs at least 2 GPUs" in result["ddp_skipped"]


BENCHMARKS = ("train_step", "grid_hours", "erase", "maxpool", "neural_cleanse", "pruning", "detectors")


@pytest.mark.parametrize("script, flags, message", [
    ("erase", ["--images", "1"], "error: --images must be at least 2, got 1"),
    ("erase", ["--defenses", "nad", "cut"], "error: --defenses must be one of finetune, nad, argd, got ['nad', 'cut']"),
    ("maxpool", ["--width", "0"], "error: --width must be in (0, 16], got 0.0"),
    ("neural_cleanse", ["--epochs", "0"], "error: --epochs must be at least 1, got 0"),
    ("pruning", ["--threads", "0"], "error: --threads must be at least 1, got 0"),
    ("pruning", ["--images", "many"], "error: argument --images: invalid int value: 'many'"),
    ("detectors", ["--run_dir", "x", "--pool_sizes", "0"], "error: --pool_sizes must be at least 1"),
    ("detectors", [], "error: --run_dir is required"),
])
def test_every_benchmark_refuses_a_bad_value_in_one_line(script, flags, message, capsys):
    """Each benchmark's flags are declared parameters: a bad value is one line naming the flag and exit
    status 2, before anything is timed."""
    import importlib

    from pipeline.cli import run_cli

    assert run_cli(importlib.import_module(f"benchmarks.{script}").main, flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.parametrize("script", BENCHMARKS)
def test_every_benchmark_lists_its_flags(script, capsys):
    import importlib

    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"benchmarks.{script}").main(["--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0 and shown.startswith("usage: ") and ("--threads" in shown or "--device" in shown)
