#!/usr/bin/env python
"""Draw the paper's figures for trained (and evaluated) runs.

    python visualize.py --data_name digits --mlmmdr_lamb 0.1        # feature scatter, s1 s2 s3 (Fig. 4)
    python visualize.py --sweep runs/                                # BA, ASR, ARO against λ (Fig. 3)
    python visualize.py --detection runs/                            # AC/SS/SR F1 bars (Figs. 5–7)
    python visualize.py --nc runs/ --prune runs/                     # defend.py results (Figs. 8, 10)

Figures go to --figure_dir (default figures/): <run name>.png, <data>_<model>_<attack>_sweep.png
<data>_<model>_<attack>_detection.png, _nc.png and _prune.png; --pdf adds a PDF of each.
"""
import sys
from pathlib import Path

from utils.cli import run_cli


def add_figure_arguments(parser):
    group = parser.add_argument_group("figures")
    group.add_argument("--method", default="pca", help="2-D projection for the scatter: pca (the authors' "
                                                       "code, default) or tsne (scikit-learn, seeded)")
    group.add_argument("--num_samples", type=int, default=100,
                       help="samples per group in the scatter (the authors' code: 100)")
    group.add_argument("--sweep", metavar="DIR_OR_GLOB", help="draw BA/ASR/ARO against λ for these evaluated runs")
    group.add_argument("--detection", metavar="DIR_OR_GLOB", help="draw detection F1 bars for these evaluated runs")
    group.add_argument("--nc", metavar="DIR_OR_GLOB",
                       help="draw the Neural Cleanse mask norms (infected label vs others) of these runs")
    group.add_argument("--prune", metavar="DIR_OR_GLOB", help="overlay the pruning curves of these runs")
    group.add_argument("--lamb", type=float, default=None,
                       help="--detection: the λ of the SL-MMDR/ML-MMDR runs to show (default: the largest)")
    group.add_argument("--rule", choices=("headline", "own", "oracle"), default="headline",
                       help="--detection: the headline F1 (default: AC and SS by their own rule, SR by the "
                            "max F1 over thresholds, as paper §6.1), the own rule, or the oracle (the best "
                            "labeling/threshold chosen with the ground truth, a diagnostic)")
    group.add_argument("--figure_dir", default="figures", help="where figures are written (default: figures/)")
    group.add_argument("--pdf", action="store_true", help="also write a PDF of each figure")
    group.add_argument("--show", action="store_true", help="open the figures in a window (needs a display)")
    return parser


def main(argv=None) -> int:
    from utils.errors import UserError
    from utils.options import build_parser, config_from_args

    parser = add_figure_arguments(build_parser(__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        raise UserError("--num_samples must be at least 2")
    if args.method not in ("pca", "tsne"):
        raise UserError(f"unknown --method '{args.method}'; choose pca or tsne")
    if args.show:
        import matplotlib

        matplotlib.use("TkAgg", force=True)
    from visualization.common import close, save_figure

    figure_dir = Path(args.figure_dir)
    figures = []
    if args.sweep or args.detection or args.nc or args.prune:
        from visualization.defense_plots import nc_norms_figure, pruning_figure
        from visualization.detection import detection_figure
        from visualization.runs import load_results
        from visualization.sweep import sweep_figure

        for pattern, kind, filename, draw in (
                (args.sweep, "sweep", "evaluation.json", sweep_figure),
                (args.detection, "detection", "evaluation.json",
                 lambda rs, t: detection_figure(rs, t, args.lamb, args.rule)),
                (args.nc, "nc", "defense_nc.json", nc_norms_figure),
                (args.prune, "prune", "defense_prune.json", pruning_figure)):
            if not pattern:
                continue
            for (data, model, attack), results in sorted(load_results(pattern, filename).items()):
                figures.append((draw(results, f"{data} / {model} / {attack}"),
                                figure_dir / f"{data}_{model}_{attack}_{kind}.png"))
    else:
        from evaluation.representations import load_trained
        from visualization.scatter import feature_scatter

        config = config_from_args(args)
        prepared, _ = load_trained(config)
        figure, notes = feature_scatter(prepared, args.num_samples, args.method)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        figures.append((figure, figure_dir / f"{config.run_name}.png"))
    for figure, path in figures:
        for written in save_figure(figure, path, args.pdf):
            print(f"wrote {written}")
    if args.show:
        import matplotlib.pyplot as plt

        plt.show()
    for figure, _ in figures:
        close(figure)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
