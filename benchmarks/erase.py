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
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg11", "wrn16_1"])
    parser.add_argument("--defenses", nargs="+", default=["finetune", "nad", "argd"],
                        choices=["finetune", "nad", "argd"])
    parser.add_argument("--images", type=int, default=2500, help="the defender's images (5%% of CIFAR-10: 2500)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per defense (median), after one warm-up")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.images < 2 or args.epochs < 1 or not args.width > 0:
        parser.error("--images must be at least 2, --epochs at least 1 and --width positive")
    from utils.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results = [measure(model, defense, args, device) for model in args.models for defense in args.defenses]
    print(json.dumps({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
