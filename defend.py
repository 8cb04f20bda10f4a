#!/usr/bin/env python
"""Test a trained run against Neural Cleanse trigger synthesis and neuron pruning (paper §6.2).

    python defend.py --defense nc --data_name digits       # reverse-engineer a trigger per class
    python defend.py --defense prune --data_name digits    # prune s3's channels, BA/ASR curves

Writes runs/<name>/defense_<nc|prune>.json and a figure in --figure_dir (default figures/):
<name>/nc_triggers.png (Fig. 9) or <name>/prune_curve.png (Fig. 10).
"""
import sys

from pipeline.cli import run_cli


def _print_nc(config, result) -> None:
    print(f"mask L1 norms per class: {', '.join(f'{v:.1f}' for v in result['norms'])}")
    print(f"{config.run_name}: target {config.target}'s mask is #{result['target_l1_rank']} of "
          f"{result['classes']} by l1 norm, {result['target_l1_ratio_to_median']:.2f}× the others' median; "
          f"Neural Cleanse flags {result['flagged'] or 'no class'} (target anomaly index "
          f"{result['target_anomaly_index']:.2f}, > 2 flags) in {result['seconds']:.0f}s")


def _print_prune(config, result) -> None:
    for point in result["curve"][::4]:
        print(f"pruned {point['ratio']:.2f} ({point['pruned']}/{result['channels']}): BA={point['ba']:.4f} "
              f"ASR={point['asr']:.4f}")


def defense_table() -> dict:
    """{--defense value: (options dataclass, flag prefix, figure stage, summary printer)}; the
    defense itself is the stage of the same name (pipeline/stages/defend.py)."""
    from defenses import NCOptions, PruneOptions

    return {"nc": (NCOptions, "nc_", "nc_triggers", _print_nc),
            "prune": (PruneOptions, "prune_", "prune_curve", _print_prune)}


def build_parser():
    from defenses import DEFENSES
    from pipeline.cli import build_run_parser
    from pipeline.flags import add_flags
    from pipeline.stages.figures import FigureOptions

    parser = build_run_parser(__doc__.split("\n\n")[0])
    group = parser.add_argument_group("defense (paper §6.2)")
    group.add_argument("--defense", required=True,
                       help="; ".join(f"{key}: {DEFENSES[key].display}" for key in defense_table()))
    for key, (options, prefix, _, _) in defense_table().items():
        add_flags(parser, options, prefix=prefix,
                  title=f"{DEFENSES[key].display} (--defense {key}, paper {DEFENSES[key].section})")
    add_flags(parser, FigureOptions, title="figures")
    return parser


def main(argv=None) -> int:
    from pipeline.cli import config_from_args
    from pipeline.flags import from_args
    from pipeline.stages import run_stage
    from pipeline.stages.figures import FigureOptions
    from utils.errors import ParameterError

    table = defense_table()
    args = build_parser().parse_args(argv)
    if args.defense not in table:
        raise ParameterError("defense", f"must be one of {', '.join(table)}, got '{args.defense}'")
    options_class, prefix, figure_stage, summarise = table[args.defense]
    options = from_args(options_class, args, prefix)
    figure_options = from_args(FigureOptions, args)
    config = config_from_args(args)
    summarise(config, run_stage(args.defense, config, options))
    for written in run_stage(figure_stage, config, figure_options)["written"]:
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
