#!/usr/bin/env python
"""Time one pruning curve (21 ratios, paper Fig. 10) measured with whole forward passes against the
model cut before the pruned layer (inference/cut.py); prints one JSON object.

    python benchmarks/pruning.py [--model_name vgg11] [--width 0.25] [--images 2000] [--threads 1]

per place (s3's output, the last convolution's input): the seconds of each way, their ratio, and
whether the two curves are equal (they should be: the same batches through the same layers).
Random weights and random images of Fashion-MNIST's padded shape: the cost does not depend on them.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from attacks import build as build_attack  # noqa: E402
from benchmarks import common  # noqa: E402
from defenses.repair.pruning import last_convolution, pruning_curve  # noqa: E402
from inference import benign_accuracy_and_asr, channel_means  # noqa: E402
from inference.cut import repeated_ba_asr  # noqa: E402
from utils.params import param  # noqa: E402


@dataclass
class PruningOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each; the JSON repeats those that say what was timed."""

    model_name: str = common.model_name(choices=models.NAMES)
    width: float = common.width(0.25)
    images: int = param(2000, "test images (the grid's s3 curve uses 10000)", low=1)
    batch_size: int = param(512, "images of a forward pass", low=1)
    threads: int = common.threads(1, note="; the grid runs each run on 1")


def main(argv=None) -> int:
    args = common.parse(PruningOptions, argv, __doc__)
    common.thread_count(args.threads)
    torch.manual_seed(0)
    model = models.build(args.model_name, width=args.width).eval()
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.images,))
    attack, target, device = build_attack("patched"), 0, torch.device("cpu")
    places = {"s3": (models.tap_modules(model, ("s3",))["s3"], "output"),
              "last_conv_input": (last_convolution(model)[1], "input")}
    result = {"model": args.model_name, "width": args.width, "images": args.images, "threads": args.threads,
              "ratios": 21, "places": {}}
    for place, (module, on) in places.items():
        order = torch.argsort(channel_means(model, module, images[:256], device, on=on), descending=True)
        timings, curves = {}, {}
        for way in ("whole", "cut"):
            started = time.perf_counter()
            evaluate = (repeated_ba_asr(model, module, images, labels, attack, target, device, args.batch_size)
                        if way == "cut" else
                        lambda: benign_accuracy_and_asr(model, images, labels, attack, target, device, args.batch_size))
            curves[way] = pruning_curve(model, module, order, evaluate, on=on)
            timings[way] = round(time.perf_counter() - started, 2)
        result["places"][place] = {"whole_s": timings["whole"], "cut_s": timings["cut"],
                                   "speedup": round(timings["whole"] / timings["cut"], 1),
                                   "equal_curves": curves["whole"] == curves["cut"]}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
