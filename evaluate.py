#!/usr/bin/env python
"""Measure a trained run's distributional differences and difference-based detections (paper §4, §6.1).

    python evaluate.py --data_name digits                     # the run main.py --data_name digits wrote
    python evaluate.py --data_name digits --mlmmdr_lamb 0.3   # the ML-MMDR run with λ = 0.3
    python evaluate.py --all_runs runs/                       # every run, plus runs/summary.md and .csv

Writes runs/<name>/evaluation.json and evaluation.md: BA, ASR, MMD²/ED²/SWD₁ at s1 s2 s3 with
intra- and inter-class baselines, ARO, and AC/SS/SR detection F1 per level and pool.
"""
import sys

from pipeline.cli import run_cli


def build_parser():
    from evaluation.protocol import EvalOptions
    from pipeline.cli import build_run_parser
    from pipeline.flags import add_flags

    from pipeline.flags import add_detector_flags

    parser = build_run_parser(__doc__.split("\n\n")[0])
    add_flags(parser, EvalOptions, title="evaluation protocol (paper §4, §6.1)")
    add_detector_flags(parser)
    group = parser.add_argument_group("many runs")
    group.add_argument("--all_runs", metavar="DIR_OR_GLOB", default=None,
                       help="evaluate every run in a directory or matching a glob and write summary.md/.csv")
    group.add_argument("--force", action="store_true",
                       help="with --all_runs: re-evaluate every run, also those whose evaluation.json was computed "
                            "with these options (a run evaluated with other options is re-evaluated anyway)")
    return parser


def main(argv=None) -> int:
    from evaluation.protocol import EvalOptions
    from evaluation.report import class_level_table, detection_table, distance_table
    from pipeline.cli import config_from_args
    from pipeline.flags import eval_options_from_args
    from pipeline.stages import run_stage
    from pipeline.stages.evaluate import evaluate_all

    args = build_parser().parse_args(argv)
    options = eval_options_from_args(EvalOptions, args)
    if args.all_runs:
        overrides = {"device": args.device, "progress": args.progress, "eval_batch_size": args.eval_batch_size}
        rows, evaluated = evaluate_all(args.all_runs, options, overrides, force=args.force)
        print(f"evaluated {len(evaluated)} of {len(rows)} runs ({len(rows) - len(evaluated)} up to date with these "
              f"options); summary in summary.md and summary.csv next to them")
        return 0
    config = config_from_args(args)
    result = run_stage("evaluate", config, options)
    print("\n".join(distance_table(result) + [""] + detection_table(result) + [""] + class_level_table(result)))
    print(f"{config.run_name}: BA={result['ba']:.4f} ASR={result['asr']:.4f} "
          f"-> {config.out_dir}/{config.run_name}/evaluation.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
