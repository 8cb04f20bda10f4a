#!/usr/bin/env python
"""Neural Cleanse, batched (all classes in one forward pass per step) vs sequential (one class
after another), at equal settings on the same model and data; prints one JSON object.

    python benchmarks/neural_cleanse.py [--model_name vgg11] [--width 0.25] [--epochs 6]

The model is a randomly initialised one (the timing does not depend on the weights), so the
benchmark needs no trained run. Reported: seconds per optimisation step (per class-step for the
sequential path, per all-class step for the batched one), total time to run the budget, and
their ratio. Both paths do the same work: K classes × steps × batch images.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from utils.params import param  # noqa: E402


@dataclass
class CleanseOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each: the model, and the budget both paths run in full."""

    model_name: str = common.model_name()
    width: float = common.width(0.25)
    num_classes: int = param(10, "classes of the model: the masks optimised, one per class", low=2)
    epochs: int = param(6, "Neural Cleanse epochs of each path (early stopping off)", low=1)
    steps_per_epoch: int = param(4, "mini-batches per epoch (0: the clean images over --batch_size)", low=0)
    batch_size: int = param(32, "images per class per step (the reference's 32)", low=1)
    device: str = common.device("cpu")


def main(argv=None) -> int:
    import datasets
    import models
    from defenses import NCOptions, neural_cleanse

    from utils.device import resolve_device

    args = common.parse(CleanseOptions, argv, __doc__)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = models.build(args.model_name, num_classes=args.num_classes, width=args.width).to(device).eval()
    clean = datasets.build("digits").train_x[:256]
    # early stopping off: both paths run the full budget, so the time is per equal work
    options = NCOptions(batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                        early_stop_patience=10**9)
    timings = {}
    for name, sequential in (("batched", False), ("sequential", True)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = neural_cleanse(model, clean, args.num_classes, options, seed=0, device=device, sequential=sequential)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[name] = {"seconds": time.perf_counter() - started, "steps": int(result["steps"])}
    batched, sequential = timings["batched"], timings["sequential"]
    print(json.dumps({
        "model_name": args.model_name, "width": args.width, "device": str(device), "classes": args.num_classes,
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "batched_total_s": round(batched["seconds"], 3), "sequential_total_s": round(sequential["seconds"], 3),
        "batched_step_s": round(batched["seconds"] / batched["steps"], 4),
        "sequential_class_step_s": round(sequential["seconds"] / sequential["steps"], 4),
        "batched_steps": batched["steps"], "sequential_class_steps": sequential["steps"],
        "speedup_sequential_over_batched": round(sequential["seconds"] / batched["seconds"], 3)}))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
