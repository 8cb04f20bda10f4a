#!/usr/bin/env python
"""Test a trained run against Neural Cleanse trigger synthesis and neuron pruning (paper §6.2).

    python defend.py --defense nc --data_name digits       # reverse-engineer a trigger per class
    python defend.py --defense prune --data_name digits    # prune s3's channels, BA/ASR curves

Writes runs/<name>/defense_<nc|prune>.json and figures in --figure_dir (default figures/):
<name>_nc_triggers.png (Fig. 9) and <name>_prune.png (Fig. 10).
"""
import sys
from pathlib import Path

from utils.cli import run_cli


def add_defense_arguments(parser):
    from defenses.neural_cleanse import NCOptions

    d = NCOptions()
    group = parser.add_argument_group("defense")
    group.add_argument("--defense", required=True, help="nc (Neural Cleanse trigger synthesis) or prune")
    group.add_argument("--clean_samples", type=int, default=1000,
                       help="nc: clean training images the defender holds, a seeded sample (default 1000, "
                            "the reference's NB_SAMPLE; the reference itself streams its whole test set, "
                            "31 batches of 32 per epoch)")
    group.add_argument("--sequential", action="store_true",
                       help="nc: optimise one class after another instead of all classes in one batch")
    group.add_argument("--nc_lr", type=float, default=d.lr, help="Adam learning rate (0.1)")
    group.add_argument("--nc_init_cost", type=float, default=d.init_cost,
                       help="cost λ_c once set (1e-3); it starts at 0 as the reference's RESET_COST_TO_ZERO "
                            "and is set to this after --nc_patience successful epochs")
    group.add_argument("--nc_start_at_init_cost", dest="nc_start_cost_at_zero", action="store_false",
                       help="start the cost at --nc_init_cost instead of 0")
    group.add_argument("--nc_attack_threshold", type=float, default=d.attack_threshold,
                       help="attack success a mask must reach (0.99)")
    group.add_argument("--nc_patience", type=int, default=d.patience, help="epochs before a cost change (5)")
    group.add_argument("--nc_cost_up", type=float, default=d.cost_up, help="cost multiplier up (2)")
    group.add_argument("--nc_cost_down", type=float, default=d.cost_down, help="cost divisor down (2^1.5)")
    group.add_argument("--nc_early_stop_patience", type=int, default=d.early_stop_patience,
                       help="epochs without a better mask before stopping, once the cost moved both ways "
                            "(25, the reference script's 5 × patience)")
    group.add_argument("--nc_early_stop_threshold", type=float, default=d.early_stop_threshold,
                       help="a mask is better if its norm is below this × the best so far (1.0, the "
                            "reference script; its library default is 0.99)")
    group.add_argument("--nc_batch_size", type=int, default=d.batch_size, help="images per class per step (32)")
    group.add_argument("--nc_epochs", type=int, default=d.epochs,
                       help="epoch budget (1000, the reference's STEPS; early stopping usually ends sooner)")
    group.add_argument("--nc_steps_per_epoch", type=int, default=d.steps_per_epoch,
                       help="mini-batches per epoch (31, the reference's MINI_BATCH = 1000 // 32; "
                            "0: clean samples / batch size)")
    group.add_argument("--prune_rank", choices=("triggered", "diff"), default="triggered",
                       help="prune: rank s3's channels by mean activation on triggered inputs (paper) or by "
                            "triggered − clean (Neural Cleanse)")
    group.add_argument("--figure_dir", default="figures", help="where figures are written (default: figures/)")
    return parser


def nc_options(args):
    from defenses.neural_cleanse import NCOptions
    from utils.errors import UserError

    options = NCOptions(lr=args.nc_lr, init_cost=args.nc_init_cost, start_cost_at_zero=args.nc_start_cost_at_zero,
                        attack_threshold=args.nc_attack_threshold,
                        patience=args.nc_patience, cost_up=args.nc_cost_up, cost_down=args.nc_cost_down,
                        early_stop_patience=args.nc_early_stop_patience,
                        early_stop_threshold=args.nc_early_stop_threshold, batch_size=args.nc_batch_size,
                        epochs=args.nc_epochs, steps_per_epoch=args.nc_steps_per_epoch)
    if min(options.batch_size, options.epochs, options.patience, args.clean_samples) < 1 or options.lr <= 0:
        raise UserError("--nc_batch_size, --nc_epochs, --nc_patience and --clean_samples must be at least 1 "
                        "and --nc_lr positive")
    if options.steps_per_epoch < 0 or options.init_cost < 0 or options.cost_up <= 1 or options.cost_down <= 1:
        raise UserError("--nc_steps_per_epoch and --nc_init_cost must be ≥ 0 and --nc_cost_up/--nc_cost_down > 1")
    if not 0 < options.early_stop_threshold <= 1:
        raise UserError("--nc_early_stop_threshold must be in (0, 1] (the reference script: 1.0)")
    return options


def main(argv=None) -> int:
    from evaluation.defense import DEFENSES, run_neural_cleanse, run_pruning
    from utils.errors import UserError
    from utils.options import build_parser, config_from_args
    from visualization.common import close, save_figure
    from visualization.defense_plots import pruning_figure, trigger_grid

    args = add_defense_arguments(build_parser(__doc__.split("\n\n")[0])).parse_args(argv)
    if args.defense not in DEFENSES:
        raise UserError(f"unknown --defense '{args.defense}'; choose one of: {', '.join(DEFENSES)}")
    config = config_from_args(args)
    figure_dir = Path(args.figure_dir)
    if args.defense == "nc":
        result = run_neural_cleanse(config, nc_options(args), args.clean_samples, args.sequential)
        figure = trigger_grid(result["mask"], result["pattern"], result["norms"], config.target,
                              f"{config.run_name}: Neural Cleanse reversed triggers m⊙p")
        path = figure_dir / f"{config.run_name}_nc_triggers.png"
        norms = ", ".join(f"{v:.1f}" for v in result["norms"])
        print(f"mask L1 norms per class: {norms}")
        print(f"{config.run_name}: target {config.target}'s mask is #{result['target_l1_rank']} of "
              f"{result['classes']} by l1 norm, {result['target_l1_ratio_to_median']:.2f}× the others' median; "
              f"Neural Cleanse flags {result['flagged'] or 'no class'} (target anomaly index "
              f"{result['target_anomaly_index']:.2f}, > 2 flags) in {result['seconds']:.0f}s")
    else:
        result = run_pruning(config, args.prune_rank)
        figure = pruning_figure([result], config.run_name)
        path = figure_dir / f"{config.run_name}_prune.png"
        for point in result["curve"][::4]:
            print(f"pruned {point['ratio']:.2f} ({point['pruned']}/{result['channels']}): BA={point['ba']:.4f} "
                  f"ASR={point['asr']:.4f}")
    for written in save_figure(figure, path):
        print(f"wrote {written}")
    close(figure)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
