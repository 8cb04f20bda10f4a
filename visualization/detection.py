"""Detection F1 as grouped bars: per detector and pool, one group per training method, one bar
per level (paper Figs. 5–7)."""
import matplotlib.pyplot as plt
import numpy as np

from defenses import PAPER_DETECTORS, display_name
from models import LEVELS
from utils.errors import UserError
from visualization.common import LEVEL_COLORS, METHOD_ORDER, method_label


RULE_TITLES = {"headline": "each method's own rule as the paper uses it", "own": "own rule",
               "oracle": "oracle: best labeling/threshold chosen with the ground truth"}


def pick_runs(results: list, lamb=None) -> dict:
    """{method: result}: the RBT run and, for SL-MMDR and ML-MMDR, the run at ``lamb`` (default:
    the largest λ present for that method)."""
    chosen = {}
    for method in METHOD_ORDER:
        runs = [r for r in results if r["method"] == method]
        if method != "RBT" and lamb is not None:
            runs = [r for r in runs if abs(r["mlmmdr_lamb"] - lamb) < 1e-12]
        if runs:
            chosen[method] = max(runs, key=lambda r: r["mlmmdr_lamb"])
    if not chosen:
        raise UserError("no RBT, SL-MMDR or ML-MMDR run to plot" + (f" at λ={lamb:g}" if lamb is not None else ""))
    return chosen


def detection_figure(results: list, title: str, lamb=None, rule: str = "headline"):
    chosen = pick_runs(results, lamb)
    pools = [(p["N"], p["ratio"]) for p in next(iter(chosen.values()))["detection"]["pools"]]
    figure, axes = plt.subplots(len(PAPER_DETECTORS), len(pools), figsize=(3.6 * len(pools), 2.8 * len(PAPER_DETECTORS)),
                                dpi=100, squeeze=False)
    methods = list(chosen)
    width = 0.8 / len(LEVELS)
    for row, name in enumerate(PAPER_DETECTORS):
        label = display_name(name)
        for column, (size, ratio) in enumerate(pools):
            axis = axes[row][column]
            for offset, level in enumerate(LEVELS):
                heights = []
                for method in methods:
                    pool = next((p for p in chosen[method]["detection"]["pools"]
                                 if p["N"] == size and p["ratio"] == ratio), None)
                    scores = (pool or {}).get("levels", {}).get(level, {}).get(name)
                    heights.append(scores[rule] if scores else np.nan)
                axis.bar(np.arange(len(methods)) + (offset - 1) * width, heights, width, color=LEVEL_COLORS[level],
                         label=level)
            axis.set_xticks(np.arange(len(methods)))
            axis.set_xticklabels([method_label(m, chosen[m]["mlmmdr_lamb"]) for m in methods], fontsize=8)
            axis.set_ylim(0, 1.05)
            axis.set_title(f"{label}, N={size}, r′={ratio:g}", fontsize=10)
    axes[0][0].legend(loc="lower left", fontsize=8)
    figure.suptitle(f"{title}: detection F1 ({RULE_TITLES[rule]})",
                    fontsize=10)
    figure.tight_layout()
    return figure
