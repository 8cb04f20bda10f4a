#!/usr/bin/env python
"""One table of finished runs side by side, one row per run: the method, λ, BA and ASR, and per
level (s1, s2, s3) the attack's MMD² (benign target vs poisoned), the 5-fold linear SVM's accuracy
on those two groups and AC's F1 on the evaluation's largest pool at r′ = 1. Reads each run's
metrics.json and evaluation.json (`evaluate.py --detectors ac` suffices); prints Markdown.

    python experiments/compare_regularizers.py runs/digits_vgg11_patched_w0.25 runs/digits_vgg11_patched_*_w0.25

Used for the reduction methods' comparison (docs/methods/reduction-methods.md): which regulariser,
at which levels, lowers separability the most.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.records import fmt  # noqa: E402
from models import LEVELS  # noqa: E402
from pipeline.cli import OneLineParser, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402


def row(run_dir: Path) -> list:
    """The table's cells for one run directory."""
    try:
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir} has no readable evaluation.json ({error}); run evaluate.py on it first") from None
    pools = [pool for pool in evaluation["detection"]["pools"] if pool["ratio"] == 1.0] or evaluation["detection"]["pools"]
    pool = max(pools, key=lambda p: p["N"])
    distances, separability = evaluation["distances"]["levels"], evaluation["distances"]["separability"]
    cells = [evaluation["run_name"], evaluation["method"], fmt(evaluation["mlmmdr_lamb"], 2), fmt(evaluation["ba"]),
             fmt(evaluation["asr"])]
    for level in LEVELS:
        ac = pool["levels"].get(level, {}).get("ac", {})
        cells += [fmt(distances[level]["mmd2"]["attack"]), fmt(separability[level]["svm_accuracy"]),
                  fmt(ac.get("headline"))]
    return cells


def table(run_dirs) -> str:
    header = ["run", "method", "λ", "BA", "ASR"] + [f"{name} {level}" for level in LEVELS
                                                     for name in ("MMD²", "SVM", "AC F1")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row(Path(run_dir))) + " |" for run_dir in run_dirs]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="finished run directories, each with its evaluation.json")
    args = parser.parse_args(argv)
    print(table(args.run_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
