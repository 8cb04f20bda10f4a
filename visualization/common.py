"""Shared plotting helpers: method labels, colours, saving."""
from pathlib import Path

import matplotlib.pyplot as plt

from utils.io import atomic_write

METHOD_ORDER = ("RBT", "SL-MMDR", "ML-MMDR")
METHOD_COLORS = {"RBT": "#4c72b0", "SL-MMDR": "#dd8452", "ML-MMDR": "#55a868"}
LEVEL_COLORS = {"s1": "#8172b3", "s2": "#937860", "s3": "#da8bc3"}


def method_label(method: str, lamb: float) -> str:
    """'ML-MMDR, λ=0.1' / 'SL-MMDR, λ=0.1' / 'RBT', as the authors' README figures."""
    return method if method == "RBT" else f"{method}, λ={lamb:g}"


def save_figure(figure, path: Path, pdf: bool = False) -> list:
    """Write PNG (and PDF) atomically; returns the paths written."""
    written = []
    for suffix in (".png", ".pdf") if pdf else (".png",):
        target = Path(path).with_suffix(suffix)
        atomic_write(target, lambda handle, s=suffix: figure.savefig(handle, format=s[1:], dpi=figure.dpi))
        written.append(target)
    return written


def close(figure) -> None:
    plt.close(figure)
