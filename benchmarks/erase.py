#!/usr/bin/env python
"""Seconds per epoch of fine-tuning, NAD and ARGD, and the share of it spent on distillation;
prints one JSON object.

    python benchmarks/erase.py [--models vgg11 wrn16_1] [--images 2500] [--width 1.0] [--device cpu]

Each defense trains a freshly initialised model (the timing does not depend on what it learnt) on
--images random 32×32 images, 5% of CIFAR-10's training set by default, with the defenses' own batch
size (64) and augmentation, for --epochs epochs; an epoch here is training only (defend.py also
measures BA and ASR after each). For NAD and ARGD:

teacher_share:  the teacher's forward passes, timed over the same batches
loss_share:     the distillation loss, forward and backward, on the recorded level features of the
                same batches (the student's features as leaves), over the epoch's time
"""
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from utils.params import param  # noqa: E402

DEFENSES = ("finetune", "nad", "argd")


@dataclass
class EraseOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each; the JSON repeats those that say what was timed."""

    models: list = param(["vgg11", "wrn16_1"], "architectures timed (the grid's base model and the erasing "
                         "defenses' own)", nargs="+")
    defenses: list = param(list(DEFENSES), "erasing defenses timed", choices=DEFENSES, nargs="+")
    images: int = param(2500, "the defender's images (5% of CIFAR-10: 2500)", low=2)
    width: float = common.width(1.0)
    epochs: int = param(2, "timed epochs per defense (median), after one warm-up", low=1)
    device: str = common.device("auto")
    threads: Optional[int] = common.threads()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device) -> float:
    _sync(device)
    started = time.perf_counter()
    function()
    _sync(device)
    return time.perf_counter() - started


def measure(model_name: str, defense: str, args, device) -> dict:
    import models
    from defenses.erasing.train import ARGDOptions, Eraser, FinetuneOptions, NADOptions, argd_loss, frozen, nad_distiller
    from inference import recording
    from utils.seed import generator

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    model = models.build(model_name, 10, args.width).to(device)
    options = {"finetune": FinetuneOptions, "nad": NADOptions, "argd": ARGDOptions}[defense]()
    teacher, distill = None, None
    if defense != "finetune":
        teacher = frozen(models.build(model_name, 10, args.width).to(device))
        distill = nad_distiller(options) if defense == "nad" else argd_loss(model, images, device, 0, options)
    eraser = Eraser(model, images, labels, options, device, generator(0, "benchmark"), distill, teacher)
    eraser.train_epoch(0)  # warm-up: allocator, cuDNN autotuning
    epochs = [_timed(lambda epoch=epoch: eraser.train_epoch(epoch), device) for epoch in range(args.epochs)]
    result = {"model": model_name, "width": args.width, "defense": defense, "images": args.images,
              "epoch_s": statistics.median(epochs)}
    if distill is not None:
        teacher_s, loss_s = 0.0, 0.0
        for inputs, _ in eraser.batches():
            with torch.no_grad(), recording(model, eraser.student_taps) as student_levels:
                model(inputs)
            student = {level: value.detach().requires_grad_(True) for level, value in student_levels.items()}
            with torch.no_grad(), recording(teacher, eraser.teacher_taps) as teacher_levels:
                teacher_s += _timed(lambda: teacher(inputs), device)
            loss_s += _timed(lambda: distill(student, dict(teacher_levels))[0].backward(), device)
        result.update(teacher_share=round(teacher_s / result["epoch_s"], 4), loss_share=round(loss_s / result["epoch_s"], 4))
    return result


def main(argv=None) -> int:
    from utils.device import resolve_device

    args = common.parse(EraseOptions, argv, __doc__)
    common.thread_count(args.threads)
    device = resolve_device(args.device)
    results = [measure(model, defense, args, device) for model in args.models for defense in args.defenses]
    print(json.dumps({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
