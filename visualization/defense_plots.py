"""Neural Cleanse and pruning figures (paper Figs. 8, 9, 10)."""
import matplotlib.pyplot as plt
import numpy as np

from defenses.repair.neural_cleanse import target_ranking
from visualization.common import METHOD_COLORS, METHOD_ORDER, method_label


def trigger_grid(mask, pattern, norms, target: int, title: str):
    """The reversed trigger m⊙p of every class (Fig. 9), the infected label marked."""
    count = len(mask)
    columns = min(count, 10)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.7 * rows + 0.4), dpi=100, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = (mask[index] * pattern[index]).permute(1, 2, 0).clamp(0, 1).numpy()
        axis.imshow(image, interpolation="nearest")
        norm = norms[index]
        label = f"{index}{' (t)' if index == target else ''}\n‖m‖₁={norm:.1f}" if norm is not None else f"{index}\nnot found"
        axis.set_title(label, fontsize=8, color="#c44e52" if index == target else "black")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def nc_norms_figure(results: list, title: str):
    """‖m‖₁ of the infected label against the other labels, one group per training method (Fig. 8)."""
    results = sorted(results, key=lambda r: (METHOD_ORDER.index(r["method"]), r["mlmmdr_lamb"]))
    figure, axis = plt.subplots(figsize=(max(4.5, 1.8 + 1.6 * len(results)), 3.8), dpi=100)
    for position, result in enumerate(results):
        norms = np.array([np.nan if v is None else v for v in result["norms"]])
        target = result["target"]
        others = np.delete(norms, target)
        axis.scatter(np.full(len(others), position) + np.linspace(-0.15, 0.15, len(others)), others, s=14,
                     color="#999999", label="other labels" if position == 0 else None)
        axis.scatter([position], [norms[target]], s=60, marker="*", color=METHOD_COLORS[result["method"]],
                     label=None, zorder=3)
        ranking = target_ranking(norms, target)
        axis.annotate(f"#{ranking['target_l1_rank']}, {ranking['target_l1_ratio_to_median']:.2f}×, "
                      f"AI={result['target_anomaly_index']:.1f}", (position, norms[target]), fontsize=7,
                      xytext=(6, -3), textcoords="offset points")
    axis.set_xticks(range(len(results)))
    axis.set_xticklabels([method_label(r["method"], r["mlmmdr_lamb"]) for r in results], fontsize=8)
    axis.set_ylabel("‖m‖₁ of the reversed trigger")
    axis.set_title("Neural Cleanse (★ infected label: its rank by ‖m‖₁, ratio to the others' median, "
                   "AI = anomaly index)", fontsize=8)
    figure.suptitle(title, fontsize=10)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


def _by_method(results: list) -> list:
    return sorted(results, key=lambda r: (METHOD_ORDER.index(r["method"]), r["mlmmdr_lamb"]))


def _ba_asr_row(row, results: list, points: str, x: str, title: str, xlabel: str) -> None:
    """BA (left) and ASR (right) against ``x`` of each result's ``points``, one line per run."""
    for axis, key, name in zip(row, ("ba", "asr"), ("BA", "ASR")):
        for result in results:
            axis.plot([point[x] for point in result[points]], [point[key] for point in result[points]], marker=".",
                      color=METHOD_COLORS[result["method"]], label=method_label(result["method"], result["mlmmdr_lamb"]))
        axis.set_title(title.format(name=name), fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylim(-0.02, 1.02)
    row[0].legend(loc="lower left", fontsize=8)


def _mark_collapsed(row, results: list) -> None:
    """A black × over every epoch at which a run had collapsed (inference.COLLAPSE_SHARE)."""
    for axis, key in zip(row, ("ba", "asr")):
        for result in results:
            points = [(p["epoch"], p[key]) for p in result["history"] if p.get("collapsed_to_class") is not None]
            if points:
                axis.scatter(*zip(*points), marker="x", s=40, color="black", zorder=4, linewidths=1.2)


def pruning_figure(results: list, title: str):
    """BA and ASR against the pruned ratio of s3's channels, one line per run (Fig. 10)."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    _ba_asr_row(axes, _by_method(results), "curve", "ratio", "{name} after pruning s3", "pruned ratio")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def erasing_figure(results: dict, title: str):
    """BA and ASR over the epochs of each erasing defense (epoch 0: before it), one line per run, one
    row per defense: ``results`` is {defense display name: [defense result, ...]}."""
    rows = [(name, _by_method(runs)) for name, runs in results.items() if runs]
    figure, axes = plt.subplots(len(rows), 2, figsize=(9, 3.2 * len(rows)), dpi=100, squeeze=False)
    for (name, runs), row in zip(rows, axes):
        _ba_asr_row(row, runs, "history", "epoch", f"{{name}} during {name} ({runs[0]['clean_samples']} clean images)",
                    "epoch (0: before)")
        _mark_collapsed(row, runs)
    figure.suptitle(title + "\n× collapsed: over half the clean images go to one class, its ASR measures nothing",
                    fontsize=10)
    figure.tight_layout()
    return figure
