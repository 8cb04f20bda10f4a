#!/usr/bin/env python
"""Measure a trained run's distributional differences and difference-based detections (paper §4, §6.1).

    python evaluate.py --data_name digits                     # the run main.py --data_name digits wrote
    python evaluate.py --data_name digits --mlmmdr_lamb 0.3   # the ML-MMDR run with λ = 0.3
    python evaluate.py --all_runs runs/                       # every run, plus runs/summary.md and .csv

Writes runs/<name>/evaluation.json and evaluation.md: BA, ASR, MMD²/ED²/SWD₁ at s1 s2 s3 with
intra- and inter-class baselines, ARO, and AC/SS/SR detection F1 per level and pool.
"""
import sys

from utils.cli import run_cli


def add_evaluation_arguments(parser):
    from defenses import AC_DECISIONS, AC_REDUCTIONS, SS_SCORES
    from evaluation.protocol import EvalOptions

    d = EvalOptions()
    group = parser.add_argument_group("evaluation protocol (paper §4, §6.1)")
    group.add_argument("--num_samples", type=int, default=d.num_samples,
                       help="representations per set for the distances (paper: 500; fewer are used "
                            "when fewer exist, and the counts are recorded)")
    group.add_argument("--swd_projections", type=int, default=d.swd_projections,
                       help="random projections for SWD₁ (seeded by --seed)")
    group.add_argument("--pool_sizes", type=int, nargs="+", default=list(d.pool_sizes),
                       help="detection pool sizes N of inputs classified as the target (paper: 100 500)")
    group.add_argument("--pool_ratios", type=float, nargs="+", default=list(d.pool_ratios),
                       help="malicious:benign ratios r′ of the pools (1.0 from the paper; 0.5 ours)")
    group.add_argument("--ac_reduce", choices=AC_REDUCTIONS, default=d.ac_reduce,
                       help="AC's dimension reduction before k-means (k = 2). pca (default): keeps each "
                            "direction's variance, as IBM ART's AC; ica: FastICA, the paper's §6.1 "
                            "('ICA ... vectors of length 20'), which whitens every component to unit "
                            "variance and so hides the split from k-means (README, Detection). "
                            "Both forms are always also stored in evaluation.json")
    group.add_argument("--ac_components", type=int, default=d.ac_components,
                       help="AC: dimensions kept (default 10, as Chen et al. and IBM ART; the paper: 20)")
    group.add_argument("--ac_decision", choices=AC_DECISIONS, default=d.ac_decision,
                       help="AC's own rule for which cluster is malicious. clean_reference (default): the "
                            "cluster farther from the defender's ~200 clean validation samples (paper "
                            "§3.1), the same reference SR uses; smaller: the smaller cluster; "
                            "relative_size: the smaller only if it holds ≤ 35%% (Chen et al.). All are "
                            "stored in evaluation.json")
    group.add_argument("--ss_score", choices=SS_SCORES, default=d.ss_score,
                       help="SS outlier score: centred ((x−μ)·v)², the paper §3.3 and Tran et al.'s "
                            "algorithm (default); uncentred |x·v|, their released code. Both are stored")
    group.add_argument("--ss_removal_factor", type=float, default=d.ss_removal_factor,
                       help="SS's own rule removes the top factor·ε·N scores (Tran et al.: 1.5)")
    group.add_argument("--sr_reference", type=int, default=d.sr_reference,
                       help="SR: clean reference representations from the training set's target class (200)")
    group.add_argument("--sr_energy", type=float, default=d.sr_energy, help="SR: energy kept by the subspace (0.9)")
    group.add_argument("--sr_percentile", type=float, default=d.sr_percentile,
                       help="SR's label-free rule, reported beside the paper's (max F1 over thresholds, "
                            "the headline): threshold at this percentile of the reference errors (95)")
    group.add_argument("--all_runs", metavar="DIR_OR_GLOB", default=None,
                       help="evaluate every run in a directory or matching a glob and write summary.md/.csv")
    group.add_argument("--force", action="store_true",
                       help="with --all_runs: re-evaluate runs that already have evaluation.json")
    return parser


def options_from_args(args):
    from evaluation.protocol import EvalOptions
    from utils.errors import UserError

    options = EvalOptions(num_samples=args.num_samples, swd_projections=args.swd_projections,
                          pool_sizes=tuple(args.pool_sizes), pool_ratios=tuple(args.pool_ratios),
                          ac_reduce=args.ac_reduce, ac_components=args.ac_components,
                          ac_decision=args.ac_decision, ss_score=args.ss_score,
                          ss_removal_factor=args.ss_removal_factor, sr_reference=args.sr_reference,
                          sr_energy=args.sr_energy, sr_percentile=args.sr_percentile)
    if min(options.num_samples, options.swd_projections, options.ac_components, options.sr_reference,
           *options.pool_sizes) < 1:
        raise UserError("--num_samples, --swd_projections, --pool_sizes, --ac_components and --sr_reference "
                        "must be at least 1")
    if min(options.pool_ratios) <= 0 or not 0 < options.sr_energy <= 1 or not 0 < options.sr_percentile <= 100:
        raise UserError("--pool_ratios must be positive, --sr_energy in (0, 1] and --sr_percentile in (0, 100]")
    return options


def main(argv=None) -> int:
    from evaluation.report import distance_table
    from evaluation.run import evaluate_many, evaluate_run
    from utils.options import build_parser, config_from_args

    parser = add_evaluation_arguments(build_parser(__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    options = options_from_args(args)
    if args.all_runs:
        overrides = {"device": args.device, "progress": args.progress, "eval_batch_size": args.eval_batch_size}
        rows = evaluate_many(args.all_runs, options, overrides, force=args.force)
        print(f"evaluated {len(rows)} runs; summary in summary.md and summary.csv next to them")
        return 0
    config = config_from_args(args)
    result = evaluate_run(config, options)
    print("\n".join(distance_table(result)))
    print(f"{config.run_name}: BA={result['ba']:.4f} ASR={result['asr']:.4f} "
          f"-> {config.out_dir}/{config.run_name}/evaluation.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
