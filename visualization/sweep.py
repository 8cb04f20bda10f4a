"""BA, ASR and the benign/malicious MMD² per level against λ, one line per method (paper Fig. 3)."""
import matplotlib.pyplot as plt

from models import LEVELS
from visualization.common import METHOD_COLORS

PANELS = ["ba", "asr"] + [f"mmd2_{level}" for level in LEVELS]
TITLES = {"ba": "BA", "asr": "ASR", **{f"mmd2_{level}": f"MMD² at {level}" for level in LEVELS}}


def _value(result: dict, panel: str) -> float:
    """BA or ASR, or M(Z^T_t, Z^V_t) with M = MMD² at one level (None when not measurable)."""
    if panel.startswith("mmd2_"):
        return result["distances"]["levels"][panel[5:]]["mmd2"]["attack"]
    return result[panel]


def sweep_lines(results: list) -> dict:
    """{method: sorted [(λ, result)]} for ML-MMDR and SL-MMDR; the RBT run (λ = 0) starts both."""
    rbt = [r for r in results if r["method"] == "RBT"]
    lines = {}
    for method in ("ML-MMDR", "SL-MMDR"):
        points = [(r["mlmmdr_lamb"], r) for r in results if r["method"] == method]
        points += [(0.0, r) for r in rbt[:1]]
        if len(points) > (1 if rbt else 0):
            lines[method] = sorted(points, key=lambda point: point[0])
    return lines


def sweep_figure(results: list, title: str):
    lines = sweep_lines(results)
    figure, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6), dpi=100)
    for axis, panel in zip(axes, PANELS):
        for method, points in lines.items():
            measured = [(lamb, value) for lamb, value in ((lamb, _value(r, panel)) for lamb, r in points)
                        if value is not None]
            axis.plot([lamb for lamb, _ in measured], [value for _, value in measured], marker="o",
                      color=METHOD_COLORS[method], label=method)
        axis.set_title(TITLES[panel])
        axis.set_xlabel("λ")
        if panel.startswith("mmd2_"):
            axis.set_yscale("log")  # ML-MMDR lowers MMD² by orders of magnitude
        else:
            axis.set_ylim(-0.02, 1.02)
    if lines:
        axes[0].legend(loc="lower left", fontsize=9)
    else:
        axes[0].text(0.5, 0.5, "no SL-MMDR/ML-MMDR runs yet", ha="center", transform=axes[0].transAxes, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
