#!/usr/bin/env python
"""Train a backdoored model, with or without multi-level MMD regularisation (Algorithm 1).

    python main.py --data_name digits                         # RBT (λ = 0) on the built-in dataset
    python main.py --data_name digits --mlmmdr_lamb 0.1       # ML-MMDR (s1, s2, s3)
    python main.py --data_name cifar10 --data_path data --model_name vgg11 \\
                   --attack_name blended --mlmmdr_lamb 0.1 --mlmmdr_layer all
    torchrun --nproc_per_node 4 main.py --data_name cifar10 --data_path data --sync_bn   # DDP

Writes runs/<name>/ (model.pt, config.json, metrics.json, history.csv) and prints BA and ASR.
"""
import sys

from pipeline.cli import run_cli


def main(argv=None) -> int:
    from pipeline.cli import build_run_parser, config_from_args
    from pipeline.stages import run_stage

    from utils import distributed

    config = config_from_args(build_run_parser(__doc__.split("\n\n")[0]).parse_args(argv))
    try:
        result = run_stage("train", config)
    finally:
        distributed.shutdown()
    if result.get("rank", 0) != 0:
        return 0  # under torchrun rank 0 speaks for the run
    collapsed = result["collapsed_to_class"]
    note = "" if collapsed is None else f", collapsed: most clean images → {collapsed}, the ASR means nothing"
    others = (f" (other classes {result['asr_other_classes']:.4f}, the most in one "
              f"{result['asr_worst_other_class']:.4f})" if "asr_other_classes" in result else "")
    print(f"{config.run_name}: BA={result['ba']:.4f} ASR={result['asr']:.4f}{others} "
          f"({config.method}, {config.describe_regime()}, {result['epochs']} epochs, {result['train_seconds']:.0f}s{note}) -> {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
