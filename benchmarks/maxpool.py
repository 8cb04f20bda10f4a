#!/usr/bin/env python
"""Time VGG's 2×2 max-pool at inference: torch's max_pool2d against the pairwise maxima that
models/pooling.py uses on a CPU for NCHW inputs, and the whole model in NCHW and in channels-last;
prints one JSON object.

    python benchmarks/maxpool.py [--model_name vgg11] [--width 0.25] [--batch_size 512] [--threads 1]

pools:    per pool of the model (its input shape), the median ms of max_pool2d and of the maxima,
          and whether their outputs are equal
forward:  the median ms of the whole model's inference forward (the same weights): NCHW with
          max_pool2d, NCHW with the maxima (the project's NCHW path), channels-last (torch's
          channels-last max-pool); whether the logits are equal to the first's
"""
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from benchmarks import common  # noqa: E402
from models.pooling import pairwise_max_2x2  # noqa: E402
from utils.params import param  # noqa: E402


@dataclass
class MaxPoolOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each; the JSON repeats them."""

    model_name: str = common.model_name(choices=("vgg11", "vgg16"))  # the architectures with 2×2 max-pools
    width: float = common.width(0.25)
    batch_size: int = param(512, "images of an inference forward pass (the evaluation's --eval_batch_size)", low=1)
    threads: int = common.threads(1, note="; the grid runs each run on 1")
    rounds: int = param(5, "timed rounds of each (median), after one untimed", low=1)


def median_ms(function, rounds: int) -> float:
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return round(1e3 * statistics.median(times), 2)


def main(argv=None) -> int:
    args = common.parse(MaxPoolOptions, argv, __doc__)
    common.thread_count(args.threads)
    torch.manual_seed(0)
    model = models.build(args.model_name, width=args.width).eval()
    reference = copy.deepcopy(model)
    for index, module in enumerate(reference.features):
        if isinstance(module, torch.nn.MaxPool2d):
            reference.features[index] = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    images = F.pad(torch.rand(args.batch_size, 3, 28, 28), (2, 2, 2, 2))
    inputs = []
    hooks = [module.register_forward_pre_hook(lambda m, i: inputs.append(i[0]))
             for module in model.features if isinstance(module, torch.nn.MaxPool2d)]
    with torch.no_grad():
        model(images)
        for hook in hooks:
            hook.remove()
        pools = [{"input": list(x.shape), "max_pool2d_ms": median_ms(lambda: F.max_pool2d(x, 2, 2), args.rounds),
                  "pairwise_ms": median_ms(lambda: pairwise_max_2x2(x), args.rounds),
                  "equal": torch.equal(F.max_pool2d(x, 2, 2), pairwise_max_2x2(x))} for x in inputs]
        channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        forward = {"max_pool2d_ms": median_ms(lambda: reference(images), args.rounds),
                   "pairwise_ms": median_ms(lambda: model(images), args.rounds),
                   "channels_last_ms": median_ms(lambda: channels_last(images), args.rounds),
                   "pairwise_equal": torch.equal(reference(images), model(images)),
                   "channels_last_equal": torch.equal(reference(images), channels_last(images))}
    print(json.dumps({"model": args.model_name, "width": args.width, "batch_size": args.batch_size,
                      "threads": args.threads, "device": "cpu", "pools": pools, "forward": forward}, indent=1))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
