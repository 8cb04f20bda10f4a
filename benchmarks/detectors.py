#!/usr/bin/env python
"""What each registered detector costs on a trained run's pools; prints one JSON object.

    python benchmarks/detectors.py --run_dir results/reproduce/fmnist_vgg11_patched_w0.25_n10000 [--device cpu]

Evaluates the run once with every registered detector (the reproduction's pools: N ∈ {100, 500},
r′ ∈ {0.5, 1}, unless --pool_sizes/--pool_ratios say otherwise), and once with the paper's three
alone, and reports each detector's seconds (its own computing and the inputs only it needs,
summed over pools and levels) and both evaluations' wall time: the stage's cost before and after
the detectors added since the paper.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    import torch

    from defenses import DETECTORS, PAPER_DETECTORS
    from evaluation.protocol import EvalOptions, evaluate
    from pipeline.prepare import load_trained
    from pipeline.rundir import RunDir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a trained run's directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pool_sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--pool_ratios", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    subject = load_trained(RunDir(args.run_dir).config(device=args.device, progress=False)).subject
    timings = {}
    for label, names in (("paper", PAPER_DETECTORS), ("all", tuple(DETECTORS))):
        options = EvalOptions(pool_sizes=tuple(args.pool_sizes), pool_ratios=tuple(args.pool_ratios), detectors=names)
        started = time.perf_counter()
        result = evaluate(subject, options)
        timings[label] = {"evaluate_s": round(time.perf_counter() - started, 1),
                          "detector_s": result["detection"]["seconds"]}
    print(json.dumps({"run_dir": args.run_dir, "device": args.device, "threads": torch.get_num_threads(),
                      "pools": {"N": args.pool_sizes, "ratio": args.pool_ratios},
                      "evaluate_s_paper_detectors": timings["paper"]["evaluate_s"],
                      "evaluate_s_every_detector": timings["all"]["evaluate_s"],
                      "ratio": round(timings["all"]["evaluate_s"] / max(timings["paper"]["evaluate_s"], 1e-9), 2),
                      "detector_s": timings["all"]["detector_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
