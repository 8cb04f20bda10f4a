#!/usr/bin/env python
"""How many hours the paper's CIFAR-10 grid takes on GPUs, from rates measured on --device (or, with
no GPU to measure on, from an assumed sustained FLOP rate); prints one JSON object.

    python benchmarks/grid_hours.py --device cuda          # measured on this GPU, one architecture at a time
    python benchmarks/grid_hours.py --assume_tflops 15     # an estimate until it is measured on a GPU

The grid is the README's: each architecture of --model_name × the four attacks of TABLE 1 × {RBT;
SL-MMDR and ML-MMDR at λ = 0.1, 0.2, 0.3} = 28 runs an architecture, 112 for the four, each with
main.py's CIFAR-10 defaults (100 epochs, per-epoch BA/ASR) and the sweep's --flags, then the
evaluate stage (``--stages train evaluate``). One run costs

  train     epochs × |C| / train_images_per_s; |C| is the attack's training set (55,000 images,
            65,000 for WaNet with its noise images: training_set_size)
  monitor   evaluations × (10,000 clean + 9,000 triggered test images) / eval_images_per_s, with
            evaluations = the epochs main.py measures BA and ASR after (--eval_every, and the last)
  evaluate  the evaluate stage's seconds (distances, the detectors)

train_images_per_s is the ML-MMDR step's (λ = 0.1, every level) for every run: RBT's is a little
faster, so the hours are an upper bound on that count. Wall hours hand the runs, longest first, to
``--gpus`` GPUs (a node's ``sweep.py --jobs 8``) and to ``--slurm_jobs`` array tasks of one GPU
each: the makespan, without Slurm's queueing.

Measured (the default): the rates are timed on --device with the sweep's flags (--amp,
--channels_last, --compile), and the evaluate stage is timed on a run of the architecture on a
CIFAR-10-shaped dataset of random pixels (write_cifar10_shaped), which it inspects as it would
CIFAR-10.
Assumed (--assume_tflops T): the rates are T·10¹² divided by the architecture's counted FLOPs per
image (torch's FlopCounterMode: forward for evaluation, forward + backward for training); the
evaluate stage is still timed on --device, so on a CPU it is an upper bound for a GPU (its
detectors fit on the features with scikit-learn and numpy, on the CPU cores either way). The JSON
says where each number comes from.
"""
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from utils.params import param  # noqa: E402

GRID_MODELS = ("vgg11", "resnet18", "preactresnet18", "vgg16")  # the README's grid
PAPER_LAMBDAS = (0.1, 0.2, 0.3)  # paper §5: SL-MMDR and ML-MMDR at each λ, beside RBT
CIFAR10_TEST_IMAGES = 10_000
CIFAR10_TRAIN_IMAGES = 50_000  # CIFAR-10's training split: data_batch_1 … data_batch_5, 10,000 images each


def training_set_size(train_size: int, attack_name: str, poison_ratio: float, mode: str = "add",
                      params: dict = None) -> int:
    """|C|, the images one epoch trains on, for ``train_size`` clean images: the count PoisonedData
    (attacks/poisoning.py) arrives at, without building it, so the grid's cost needs no dataset.
    It follows the same rules (tests/test_benchmark.py holds the two equal for every attack): |U| =
    round(r·|D|) poisoned copies, and round(noise_per_poison·|U|) noise images from the others for
    an attack with a noise mode (WaNet's cross ratio), read from the attack built with ``params``,
    and round(cover_per_poison·|U|) cover images (the adaptive attacks'); "add" trains on all of them beside D, "replace" on |D| images. Whether enough images lie outside
    the target class is a question of the labels, which PoisonedData asks."""
    from attacks import build
    from attacks.poisoning import MODES
    from utils.errors import ParameterError

    if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
        raise ParameterError("train_size", f"must be a positive whole number of images, got {train_size!r}")
    if mode not in MODES:
        raise ParameterError("poison_mode", f"must be one of {', '.join(MODES)}, got '{mode}'")
    if not 0 < poison_ratio <= 1:
        raise ParameterError("poison_ratio", f"must be in (0, 1], got {poison_ratio}")
    poisoned = int(round(poison_ratio * train_size))
    if poisoned < 1:
        raise ParameterError("poison_ratio", f"{poison_ratio} poisons no image of {train_size}; raise it")
    attack = build(attack_name, params)
    noise = min(round(attack.noise_per_poison * poisoned), train_size - poisoned)
    cover = round(attack.cover_per_poison * poisoned)  # the default --cover_ratio
    return train_size + poisoned + noise + cover if mode == "add" else train_size
SPEED_FLAGS = ("amp", "channels_last", "compile")  # the sweep's flags that change a step's speed (and --amp_dtype)


def grid_runs(model_name: str, flags: str = "") -> list:
    """The README's CIFAR-10 grid of one architecture, each run resolved as the sweep resolves it
    (``flags``: the sweep's --flags): RBT once, SL-MMDR and ML-MMDR at each λ, for each attack of
    TABLE 1 (attacks.PAPER_ATTACKS)."""
    from attacks import PAPER_ATTACKS
    from pipeline.cli import build_run_parser, config_from_args
    from pipeline.config import LAYER_CHOICES
    from pipeline.flags import split_flags

    shared = split_flags(flags, "flags")
    base = config_from_args(build_run_parser("grid_hours").parse_args(
        [*shared, "--data_name", "cifar10", "--model_name", model_name, "--no_progress"]))
    methods = [(0.0, "all")] + [(lamb, layer) for layer in LAYER_CHOICES for lamb in PAPER_LAMBDAS]
    return [replace(base, attack_name=attack, mlmmdr_lamb=lamb, mlmmdr_layer=layer, attack_params={},
                    run_name=None).resolve_defaults() for attack in PAPER_ATTACKS for lamb, layer in methods]


def evaluations(epochs: int, every: int) -> int:
    """How many times main.py measures BA and ASR during training: every ``every`` epochs, and after
    the last."""
    return epochs // every + (epochs % every != 0)


def run_seconds(run, rates: dict, evaluate_s: float, classes: int = 10) -> dict:
    """{train, monitor, evaluate, total} seconds of one run of the grid at ``rates`` (images/s of
    the training step and of evaluation)."""
    size = training_set_size(CIFAR10_TRAIN_IMAGES, run.attack_name, run.poison_ratio, run.poison_mode,
                             run.attack_params)
    monitored = CIFAR10_TEST_IMAGES + CIFAR10_TEST_IMAGES * (classes - 1) // classes  # clean + triggered
    parts = {"train": run.epochs * size / rates["train"],
             "monitor": evaluations(run.epochs, run.eval_every) * monitored / rates["eval"],
             "evaluate": evaluate_s}
    return {**parts, "total": sum(parts.values())}


def makespan(durations: list, slots: int) -> float:
    """The wall time of ``durations`` run on ``slots`` at once, each next one on the slot free first,
    longest first (what a queue of runs on N GPUs does)."""
    loads = [0.0] * max(1, slots)
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


def counted_flops(model_name: str, width: float) -> dict:
    """FLOPs per 32×32 image of the architecture: forward, and forward + backward (a training step's
    convolutions and matrix products, as torch's FlopCounterMode counts them)."""
    import models
    from torch.utils.flop_counter import FlopCounterMode

    model = models.build(model_name, num_classes=10, width=width)
    images = torch.rand(2, 3, 32, 32)
    with FlopCounterMode(display=False) as forward:
        with torch.no_grad():
            model.eval()(images)
    with FlopCounterMode(display=False) as step:
        model.train()(images).sum().backward()
    return {"forward": forward.get_total_flops() / len(images), "train": step.get_total_flops() / len(images)}


def measured_rates(model_name: str, width: float, speed: dict, device, steps: int, warmup: int) -> dict:
    """Images/s of the ML-MMDR training step (train_step's) and of evaluation's forward passes (batch
    512, no gradient), on ``device`` with ``speed`` (amp, channels_last, compile)."""
    from benchmarks.train_step import _step_rate, _trainer
    from inference import autocast
    from training import AMP_DTYPES

    args = SimpleNamespace(model_name=model_name, width=width, batch_size=256, attack_name="patched")
    trainer, poisoned = _trainer(args, device, **speed)
    train = _step_rate(trainer, poisoned, 256, steps, warmup + (2 if speed.get("compile") else 0), device)
    model = trainer.model.eval()
    images = torch.rand(512, 3, 32, 32, device=device)
    if speed.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
    amp = AMP_DTYPES[speed.get("amp_dtype", "bf16")] if speed.get("amp") else False
    with torch.no_grad(), autocast(device, amp):
        for _ in range(warmup):
            model(images)
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            model(images)
        _sync(device)
    trainer.close()
    return {"train": train, "eval": steps * len(images) / (time.perf_counter() - started)}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def write_cifar10_shaped(root: Path, seed: int = 0) -> Path:
    """A CIFAR-10-shaped dataset in CIFAR-10's own files (cifar-10-batches-py: five training batches of
    10,000 images and a test batch, balanced labels, random pixels) under ``root``: the evaluate
    stage then inspects what it inspects on CIFAR-10 (its pools, class samples and clean reserve
    are counts, drawn from sets of CIFAR-10's sizes), with no download."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10_000, 3 * 32 * 32), dtype=np.uint8),
                 b"labels": [index % 10 for index in range(10_000)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return root


def timed_evaluate_stage(model_name: str, width: float, speed: dict, device) -> float:
    """Seconds of the evaluate stage of a run of the architecture on a CIFAR-10-shaped dataset
    (:func:`write_cifar10_shaped`), trained one epoch on 2,000 images, as many as the class-level
    detectors sample (what the stage costs does not depend on how well the model learned), on
    ``device``."""
    from pipeline.config import RunConfig
    from pipeline.stages import run_stage

    with tempfile.TemporaryDirectory() as scratch:
        data_path = write_cifar10_shaped(Path(scratch) / "data")
        # the stage analyses in float32 whatever --amp trained with; the memory format it keeps
        config = RunConfig(data_name="cifar10", data_path=str(data_path), model_name=model_name, width=width,
                           epochs=1, train_subset=2000, out_dir=str(Path(scratch) / "runs"), device=str(device),
                           progress=False, channels_last=speed.get("channels_last", False)).resolve_defaults()
        with warnings.catch_warnings():  # a model trained one epoch on noise collapses to a class: beside the point
            warnings.simplefilter("ignore")
            run_stage("train", config)
        started = time.perf_counter()
        run_stage("evaluate", config)
        _sync(device)
        return time.perf_counter() - started


def architecture_cost(model_name: str, args, device, speed: dict) -> dict:
    """One architecture's rates, its evaluate stage and its 28 runs' seconds, each part saying
    whether it was measured on ``device`` or follows from --assume_tflops."""
    flops = counted_flops(model_name, args.width)
    if args.assume_tflops is None:
        rates = measured_rates(model_name, args.width, speed, device, args.steps, args.warmup)
        source = f"measured on {device}"
    else:
        rates = {"train": args.assume_tflops * 1e12 / flops["train"], "eval": args.assume_tflops * 1e12 / flops["forward"]}
        source = f"assumed: {args.assume_tflops:g} TFLOP/s sustained"
    evaluate_s = (args.evaluate_s if args.evaluate_s is not None
                  else timed_evaluate_stage(model_name, args.width, speed, device))
    runs = grid_runs(model_name, args.flags)
    seconds = [run_seconds(run, rates, evaluate_s) for run in runs]
    parts = {part: round(sum(entry[part] for entry in seconds) / 3600, 2) for part in ("train", "monitor", "evaluate")}
    return {"model_name": model_name, "width": args.width, "rates_source": source,
            "train_images_per_s": round(rates["train"], 1), "eval_images_per_s": round(rates["eval"], 1),
            "forward_gflops_per_image": round(flops["forward"] / 1e9, 4),
            "train_gflops_per_image": round(flops["train"] / 1e9, 4),
            "evaluate_stage_s": round(evaluate_s, 1),
            "evaluate_stage_source": "given (--evaluate_s)" if args.evaluate_s is not None else f"measured on {device}",
            "runs": len(runs), "gpu_hours": round(sum(entry["total"] for entry in seconds) / 3600, 2),
            "gpu_hours_by_part": parts, "run_seconds": [round(entry["total"], 1) for entry in seconds]}


@dataclass
class GridHoursOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each."""

    model_name: list = param(list(GRID_MODELS), "the grid's architectures (default: the README's four)", nargs="+")
    width: float = common.width(1.0)
    flags: str = param("--amp --channels_last", "the sweep's main.py flags (its --flags): --amp, --amp_dtype, "
                       "--channels_last and --compile set the timed path; --epochs and --eval_every the runs' "
                       "length (default: the README's grid, \"--amp --channels_last\")")
    device: str = common.device("auto")
    gpus: int = param(8, "GPUs of one node, a run on each at once (sweep.py --jobs 8)", low=1)
    slurm_jobs: int = param(32, "array tasks of one GPU at once (sweep.py --executor slurm --jobs N)", low=1)
    assume_tflops: Optional[float] = param(None, "with no GPU to measure on: the sustained TFLOP/s a GPU is assumed "
                                           "to train and evaluate at; rates are this over each architecture's "
                                           "counted FLOPs per image (an estimate until measured)", low=0.0,
                                           low_open=True, type=float)
    evaluate_s: Optional[float] = param(None, "seconds of one run's evaluate stage, instead of timing it on a "
                                        "digits run of each architecture", low=0.0, type=float)
    steps: int = param(5, "timed rounds of the training step and of evaluation", low=1)
    warmup: int = param(2, "untimed rounds first", low=0)
    threads: Optional[int] = common.threads()


def main(argv=None) -> int:
    import models
    from utils.device import resolve_device
    from utils.errors import ParameterError

    args = common.parse(GridHoursOptions, argv, __doc__)
    device = resolve_device(args.device)
    threads = common.thread_count(args.threads)
    unknown = sorted(set(args.model_name) - set(models.NAMES))
    if unknown:
        raise ParameterError("model_name", f"has no architecture {', '.join(unknown)}; choose from "
                                           f"{', '.join(models.NAMES)}")
    first = grid_runs(args.model_name[0], args.flags)[0]  # a bad --flags is refused before anything is timed
    speed = {name: getattr(first, name) for name in SPEED_FLAGS + ("amp_dtype",)}
    costs = [architecture_cost(name, args, device, speed) for name in args.model_name]
    durations = [seconds for cost in costs for seconds in cost["run_seconds"]]
    command = " ".join(["python benchmarks/grid_hours.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "device": str(device), "threads": threads, "flags": args.flags,
              "estimate": args.assume_tflops is not None, "architectures": costs, "runs": len(durations),
              "gpu_hours": round(sum(durations) / 3600, 1),
              "node_wall_hours": round(makespan(durations, args.gpus) / 3600, 1), "node_gpus": args.gpus,
              "slurm_wall_hours": round(makespan(durations, args.slurm_jobs) / 3600, 1),
              "slurm_jobs": args.slurm_jobs}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
