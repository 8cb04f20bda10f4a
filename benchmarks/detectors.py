#!/usr/bin/env python
"""What each registered detector costs on a trained run's pools; prints one JSON object.

    python benchmarks/detectors.py --run_dir results/reproduce/fmnist_vgg11_patched_w0.25_n10000 [--device cpu]

Evaluates the run once with every registered detector (the reproduction's pools: N ∈ {100, 500},
r′ ∈ {0.5, 1}, unless --pool_sizes/--pool_ratios say otherwise), and once with the paper's three
alone, and reports each detector's seconds (its own computing and the inputs only it needs,
summed over pools and levels) and both evaluations' wall time: the stage's cost before and after
the detectors added since the paper.

``--eval_flags`` gives both evaluations evaluate.py's protocol and detector flags, e.g.
``--eval_flags "--class_samples 0 --strip_n 10"``: a shrink of the defaults, which the JSON records
under ``shrunk`` (empty: every method at its defaults), so that what a shrink saves is measured.
"""
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from pipeline.cli import run_cli  # noqa: E402
from utils.errors import ParameterError  # noqa: E402
from utils.params import param  # noqa: E402

POOLS = ("pool_sizes", "pool_ratios")  # evaluate.py's own flags, with its defaults: the reproduction's pools
OWN_FLAGS = ("--detectors", "--pool_sizes", "--pool_ratios")  # the benchmark's own: refused inside --eval_flags


@dataclass
class DetectorsOptions(common.BenchmarkOptions):
    """The run evaluated and where; its pools are EvalOptions' flags (``POOLS``), taken as they are."""

    run_dir: Optional[str] = param(None, "a trained run's directory (required)", type=str)
    eval_flags: str = param("", "evaluate.py's protocol and detector flags for both evaluations, e.g. "
                            "'--class_samples 0 --strip_n 10' (a shrink of the defaults, recorded as such; the "
                            "pools are --pool_sizes/--pool_ratios)")
    device: str = common.device("cpu")
    threads: Optional[int] = common.threads()

    def __post_init__(self):
        if self.run_dir is None:
            raise ParameterError("run_dir", "is required: a trained run's directory, e.g. "
                                            "results/reproduce/fmnist_vgg11_patched_w0.25_n10000")
        super().__post_init__()


def headline_scores(result: dict) -> tuple:
    """({detector: [mean headline F1, mean AUROC]} over the evaluation's pools and levels (and, for a
    training-set detector, its one record), {class-level detector: [mean F1 inside the target class,
    mean rank of the target among the classes (1 = most anomalous)]} over the levels), so that the
    seconds are read beside what they bought."""
    def means(found: dict) -> dict:
        mean = lambda values: round(sum(values) / len(values), 3) if values else None  # noqa: E731
        return {name: [mean([first for first, _ in pairs]), mean([second for _, second in pairs if second is not None])]
                for name, pairs in found.items()}

    found, by_class = {}, {}
    for pool in result["detection"]["pools"]:
        for level_scores in list(pool.get("levels", {}).values()) + [pool.get("input_level", {})]:
            for name, record in level_scores.items():
                found.setdefault(name, []).append((record["headline"], record.get("auroc")))
    for name, record in result["detection"].get("training_set", {}).items():
        found[name] = [(record["headline"], record.get("auroc"))]
    for level_scores in result["detection"].get("class_level", {}).values():
        for name, record in level_scores.items():
            by_class.setdefault(name, []).append((record["f1_in_target"], record.get("target_rank")))
    return means(found), means(by_class)


def main(argv=None) -> int:
    import torch

    from defenses import DETECTORS, PAPER_DETECTORS
    from evaluation.protocol import EvalOptions, evaluate
    from pipeline.flags import add_flags, from_args, parse_eval_flags, split_flags
    from pipeline.prepare import load_trained
    from pipeline.rundir import RunDir

    parsed = add_flags(common.parser(DetectorsOptions, __doc__), EvalOptions, names=POOLS).parse_args(argv)
    args = from_args(DetectorsOptions, parsed)
    owned = [flag for flag in split_flags(args.eval_flags, "eval_flags") if flag in OWN_FLAGS]
    if owned:
        raise ParameterError("eval_flags", f"takes no {', '.join(owned)}: the benchmark runs the paper's three and "
                                           f"then every detector, on the pools of its own --pool_sizes/--pool_ratios")
    pools = replace(parse_eval_flags(EvalOptions, split_flags(args.eval_flags, "eval_flags")),
                    **{name: getattr(from_args(EvalOptions, parsed), name) for name in POOLS})
    common.thread_count(args.threads)
    subject = load_trained(RunDir(args.run_dir).config(device=args.device, progress=False)).subject
    timings = {}
    for label, names in (("paper", PAPER_DETECTORS), ("all", tuple(DETECTORS))):
        options = replace(pools, detectors=names)
        started = time.perf_counter()
        result = evaluate(subject, options)
        timings[label] = {"evaluate_s": round(time.perf_counter() - started, 1),
                          "detector_s": result["detection"]["seconds"], "scores": headline_scores(result)}
    print(json.dumps({"run_dir": args.run_dir, "device": args.device, "threads": torch.get_num_threads(),
                      "pools": {"N": list(pools.pool_sizes), "ratio": list(pools.pool_ratios)},
                      "shrunk": args.eval_flags,
                      "evaluate_s_paper_detectors": timings["paper"]["evaluate_s"],
                      "evaluate_s_every_detector": timings["all"]["evaluate_s"],
                      "ratio": round(timings["all"]["evaluate_s"] / max(timings["paper"]["evaluate_s"], 1e-9), 2),
                      "detector_s": timings["all"]["detector_s"],
                      "headline_f1_auroc": timings["all"]["scores"][0],
                      "class_level_f1_in_target_rank": timings["all"]["scores"][1]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
