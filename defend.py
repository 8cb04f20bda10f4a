#!/usr/bin/env python
"""Test a trained run against a model defense: Neural Cleanse and pruning (paper §6.2), or erasing
the backdoor with 5% clean data by fine-tuning, NAD or ARGD (beyond the paper).

    python defend.py --defense nc --data_name digits       # reverse-engineer a trigger per class
    python defend.py --defense prune --data_name digits    # prune s3's channels, BA/ASR curves
    python defend.py --defense finetune --data_name digits # fine-tune on the defender's clean data
    python defend.py --defense nad --data_name digits      # distil the fine-tuned teacher's attention
    python defend.py --defense argd --data_name digits     # distil its attention relation graph
    python defend.py --defense tune --data_name digits     # choose their lr and β on the defender's validation set

Writes runs/<name>/defense_<defense>.json (an erasing defense also the erased model,
defense_<defense>_model.pt; apply a tuning's choice with --tuned_settings <run dir>) and a figure in --figure_dir (default figures/): <name>/nc_triggers.png
(Fig. 9), <name>/prune_curve.png (Fig. 10), or <data>_<model>_<attack>/erasing.png (BA and ASR over
the erasing epochs of every run of the group, RBT against SL-/ML-MMDR).
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


def _scores(scores: dict) -> str:
    """'BA 0.9750, ASR 0.0120', or the collapse instead of an ASR that measures nothing."""
    collapsed = scores.get("collapsed_to_class")
    asr = (f"ASR meaningless: collapsed, {100 * scores['top_class_share']:.0f}% of clean images → {collapsed}"
           if collapsed is not None else f"ASR {scores['asr']:.4f}")
    return f"BA {scores['ba']:.4f}, {asr}"


def _print_erased(config, result) -> None:
    from metrics.erasing import LAST_EPOCHS

    before, after = result["before"], result["after"]
    teacher = f"; teacher {result['teacher']['source']} ({_scores(result['teacher'])})" if result.get("teacher") else ""
    tuned = result.get("tuned")
    settings = f", tuned lr {tuned['lr']:g}" + (f" β×{tuned['beta_scale']:g}" if "beta_scale" in tuned else "") \
        if tuned else ""
    print(f"{config.run_name}: {result['defense']} on {result['clean_samples']} clean images "
          f"({result['defender']['source']}), {len(result['history']) - 1} epochs{settings}{teacher}")
    print(f"before: {_scores(before)}, validation {before['validation_accuracy']:.4f}")
    print(f"after:  {_scores(after)}, validation {after['validation_accuracy']:.4f}; mean ASR of the last "
          f"{min(LAST_EPOCHS, len(result['history']) - 1)} epochs {result['asr_last5']:.4f}; {result['seconds']:.0f}s")
    if after["collapsed_to_class"] is not None:
        print(f"collapsed: the erased model sends {100 * after['top_class_share']:.0f}% of the clean test images to "
              f"class {after['collapsed_to_class']}; it is no result. Lower its learning rate or β (its --*_lr_scale, "
              f"--*_beta_scale flags), or run --defense tune to choose them on the defender's validation set")
    elif after["ba"] < before["ba"] - 0.1:
        print(f"note: BA fell by {100 * (before['ba'] - after['ba']):.0f} points, so the low ASR does not mean the "
              f"backdoor was erased from a working model; see the per-epoch history in defense_{result['defense']}.json "
              f"and run --defense tune to choose a learning rate and β on the defender's validation set")


def _print_tuned(config, result) -> None:
    print(f"{config.run_name}: validation accuracy before {result['before']['validation_accuracy']:.4f} "
          f"({result['defender']['validation_images']} images, {result['defender']['source']})")
    for name, found in result["defenses"].items():
        chosen = found["chosen"]
        beta = f" β×{chosen['beta_scale']:g}" if "beta_scale" in chosen else ""
        rule = f"{found['kept']} of {len(found['candidates'])} kept" if found["rule_met"] else \
            "none kept the validation accuracy: the best one taken"
        print(f"{name}: lr {chosen['lr']:g}{beta}, validation {chosen['validation_accuracy']:.4f} ({rule}); "
              f"on the test set {_scores(found['test_after'])}")


def defense_table() -> dict:
    """{--defense value: (options dataclass, flag prefix, figure stage, summary printer)}; the
    defense itself is the stage of the same name (pipeline/stages/defend.py)."""
    from defenses import ARGDOptions, FinetuneOptions, NADOptions, NCOptions, PruneOptions
    from defenses.erasing.tuning import TuneOptions

    return {"nc": (NCOptions, "nc_", "nc_triggers", _print_nc),
            "prune": (PruneOptions, "prune_", "prune_curve", _print_prune),
            "finetune": (FinetuneOptions, "ft_", "erasing", _print_erased),
            "nad": (NADOptions, "nad_", "erasing", _print_erased),
            "argd": (ARGDOptions, "argd_", "erasing", _print_erased),
            "tune": (TuneOptions, "tune_", None, _print_tuned)}


def _display(key: str) -> str:
    from defenses import DEFENSES

    return DEFENSES[key].display if key in DEFENSES else "tune the erasing defenses' lr and β on the defender's " \
                                                         "validation set"


def build_parser():
    from defenses import DEFENSES
    from defenses.erasing.train import DistillationOptions
    from pipeline.cli import build_run_parser
    from pipeline.flags import add_flags
    from pipeline.stages.figures import FigureOptions
    from utils.params import declared

    parser = build_run_parser(__doc__.split("\n\n")[0])
    group = parser.add_argument_group("defense")
    group.add_argument("--defense", required=True,
                       help="; ".join(f"{key}: {_display(key)}" for key in defense_table()))
    # the erasing defenses' shared flags (--defense_ratio, --teacher, …) get their own group; add_flags
    # adds each shared flag once, so the per-defense groups below skip them
    add_flags(parser, DistillationOptions, names={f.name for f in declared(DistillationOptions) if f.metadata.get("flag")},
              title="erasing defenses (--defense finetune, nad, argd): the defender's data and the teacher")
    for key, (options, prefix, _, _) in defense_table().items():
        section = DEFENSES[key].section if key in DEFENSES else "beyond the paper"
        add_flags(parser, options, prefix=prefix,
                  title=f"{_display(key)} (--defense {key}, {'paper ' if section.startswith('§') else ''}{section})")
    add_flags(parser, FigureOptions, title="figures")
    return parser


def main(argv=None) -> int:
    from pipeline.cli import config_from_args
    from pipeline.flags import from_args
    from pipeline.rundir import find_runs, grouped
    from pipeline.stages import get, run_group_stage, run_stage
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
    if figure_stage is None:
        return 0
    if get(figure_stage).scope == "group":
        runs = grouped(find_runs(config.out_dir)).get(config.group, [])
        drawn = run_group_stage(figure_stage, config.group, runs, figure_options)
    else:
        drawn = run_stage(figure_stage, config, figure_options)
    for written in drawn.get("written", []):
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
