"""The report's claim figures: how each claim's statistic spreads over seeds, and detection against
benign accuracy for the attacks built for inseparability (C10, C11)."""
from pathlib import Path

import matplotlib.pyplot as plt

from visualization.common import METHOD_COLORS, close, save_figure


def seed_labels(per_seed: dict, span: float, apart: float = 0.03) -> list:
    """[(x, label)]: the seeds whose dots lie within ``apart`` of the axis ``span`` of their
    neighbour share one label ("0 1 2"), which would otherwise be printed over each other."""
    groups = []
    for seed, value in sorted(per_seed.items(), key=lambda item: item[1]):
        if groups and value - groups[-1][-1][1] <= apart * span:
            groups[-1].append((seed, value))
        else:
            groups.append([(seed, value)])
    return [(sum(v for _, v in group) / len(group), " ".join(str(seed) for seed, _ in sorted(group)))
            for group in groups]


def seeds_figure(judged: list, path: Path) -> Path:
    """One panel per claim with a spread: each seed's mean of the rule's statistic (dots), the
    95% t-interval of the mean over the seeds (bar; none where it is degenerate) and the rule's margin
    (dashed line)."""
    shown = [c for c in judged if c.spread is not None and c.spread.cases]
    if not shown:
        return None
    figure, axes = plt.subplots(len(shown), 1, figsize=(7.5, 1.05 * len(shown) + 0.6), squeeze=False)
    for axis, claim in zip(axes[:, 0], shown):
        spread = claim.spread
        low, high = spread.interval if spread.interval else (spread.seed_mean, spread.seed_mean)
        if spread.interval and not spread.degenerate:
            axis.plot([low, high], [0, 0], color="#333333", linewidth=3, solid_capstyle="butt", label="95% interval")
        axis.plot([spread.seed_mean], [0], marker="|", markersize=14, color="#333333")
        axis.plot(list(spread.per_seed.values()), [0.35] * len(spread.per_seed), marker="o", color="#4c72b0",
                  linestyle="none")
        axis.axvline(spread.threshold, color="#c44e52", linestyle="--", linewidth=1)
        values = [low, high, spread.threshold, *spread.per_seed.values()]
        pad = max(0.05, 0.15 * (max(values) - min(values)))
        left, right = min(values) - pad, max(values) + pad
        axis.set_xlim(left, right)
        for value, label in seed_labels(spread.per_seed, right - left):
            axis.annotate(label, (value, 0.35), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        axis.set_ylim(-0.4, 0.8)
        axis.set_yticks([])
        axis.set_title(f"{claim.id}: {spread.statistic} (margin {spread.margin}; {spread.cases} cases)",
                       fontsize=7.5, loc="left")
        axis.tick_params(labelsize=7)
    figure.suptitle("Each claim's statistic: seeds' means (dots, labelled), 95% t-interval over the seeds "
                    "(bar), the rule's margin (dashed)", fontsize=8)
    figure.tight_layout()
    written = save_figure(figure, Path(path))
    close(figure)
    return written[0]


def detection_ba_figure(points: list, path: Path) -> Path:
    """``points``: [{label, method, ba, ba_sd, f1, f1_sd}] → mean detection F1 over every registered
    detector against BA, one point per attack (and rate), coloured by training method."""
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for point in points:
        color = METHOD_COLORS.get(point["method"], "#777777")
        axis.errorbar(point["ba"], point["f1"], xerr=point["ba_sd"], yerr=point["f1_sd"], fmt="o", color=color,
                      capsize=2, markersize=5)
        axis.annotate(point["label"], (point["ba"], point["f1"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    for method in dict.fromkeys(p["method"] for p in points):
        axis.plot([], [], "o", color=METHOD_COLORS.get(method, "#777777"), label=method)
    axis.legend(fontsize=8, loc="best")
    axis.set_xlabel("BA (mean ± sd over seeds)")
    axis.set_ylabel("detection F1, mean over every detector")
    axis.set_title("Which attack hides best, at what BA (lower is hidden better)", fontsize=9)
    figure.tight_layout()
    written = save_figure(figure, Path(path))
    close(figure)
    return written[0]
