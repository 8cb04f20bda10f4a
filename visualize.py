#!/usr/bin/env python
"""Draw the paper's figures for trained (and evaluated) runs.

    python visualize.py --data_name digits --mlmmdr_lamb 0.1        # feature scatter, s1 s2 s3 (Fig. 4)
    python visualize.py --sweep runs/                                # BA, ASR, MMD² against λ (Fig. 3)
    python visualize.py --detection runs/                            # AC/SS/SR F1 bars (Figs. 5–7)
    python visualize.py --nc runs/ --prune runs/                     # defend.py results (Figs. 8, 10)
    python visualize.py --erasing runs/                              # BA/ASR while fine-tuning, NAD, ARGD

Figures go to --figure_dir (default figures/): <run name>/features.png (features_tsne.png with
--method tsne) for one run, and <data>_<model>_<attack>/{sweep,detection,nc_norms,prune_curves,erasing}.png
for each group of runs of one dataset, model and attack (detection_<rule>[_lambda<λ>].png with
--rule or --lamb); --pdf adds a PDF of each.
"""
import sys

from pipeline.cli import run_cli

GROUP_FIGURES = {"sweep": "sweep", "detection": "detection", "nc": "nc_norms", "prune": "prune_curves",
                 "erasing": "erasing"}


def build_parser():
    from pipeline.cli import build_run_parser
    from pipeline.flags import add_flags
    from pipeline.stages import get
    from pipeline.stages.figures import DetectionFigureOptions, ScatterOptions

    parser = build_run_parser(__doc__.split("\n\n")[0])
    add_flags(parser, ScatterOptions, title="figures")
    add_flags(parser, DetectionFigureOptions, names=("lamb", "rule"))
    group = parser.add_argument_group("figures of many runs (one per dataset/model/attack)")
    for flag, stage in GROUP_FIGURES.items():
        group.add_argument(f"--{flag}", metavar="DIR_OR_GLOB", help=f"{get(stage).help}, for these runs")
    group.add_argument("--show", action="store_true", help="open the figures in a window (needs a display)")
    return parser


def main(argv=None) -> int:
    from pipeline.flags import from_args
    from pipeline.stages.figures import DetectionFigureOptions, FigureOptions, ScatterOptions

    args = build_parser().parse_args(argv)
    scatter = from_args(ScatterOptions, args)
    if args.show:
        import matplotlib

        matplotlib.use("TkAgg", force=True)
    written = []
    patterns = {stage: getattr(args, flag) for flag, stage in GROUP_FIGURES.items() if getattr(args, flag)}
    if patterns:
        from pipeline.rundir import find_runs, grouped
        from pipeline.stages import get, run_group_stage
        from utils.errors import UserError

        for stage, pattern in patterns.items():
            options = from_args(DetectionFigureOptions if stage == "detection" else FigureOptions, args)
            drawn = [run_group_stage(stage, group, runs, options).get("written", [])
                     for group, runs in sorted(grouped(find_runs(pattern)).items())]
            if not any(drawn):
                need = get(stage).needs[0]
                raise UserError(f"none of the runs in '{pattern}' has the '{need}' stage's output; run "
                                f"{get(need).help} first")
            written += [path for paths in drawn for path in paths]
    else:
        from pipeline.cli import config_from_args
        from pipeline.stages import run_stage

        result = run_stage("features", config_from_args(args), scatter)
        for note in result["notes"]:
            print(f"note: {note}", file=sys.stderr)
        written += result["written"]
    for path in written:
        print(f"wrote {path}")
    if args.show:
        import matplotlib.pyplot as plt
        from PIL import Image

        for path in written:
            if path.endswith(".png"):
                plt.figure()
                plt.imshow(Image.open(path))
                plt.axis("off")
        plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
