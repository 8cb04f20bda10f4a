"""Backdoor defenses as pure functions (paper §6), and their registry with display names.

Detections work on feature matrices (AC, SS, SR, §6.1); model defenses work on a trained model
(Neural Cleanse, pruning, §6.2). Reports and figures take display names from ``DEFENSES``.
"""
from dataclasses import dataclass

from defenses.detection import (AC_DECISIONS, AC_REDUCTIONS, SS_SCORES, Detection, activation_clustering,
                                spectral_signatures, subspace_reconstruction)
from defenses.neural_cleanse import (NCOptions, anomaly_index, clean_sample, flagged_classes, neural_cleanse,
                                     reverse_engineer, target_ranking)
from defenses.pruning import PruneOptions, channel_ranking, prune_order, pruned, pruning_curve


@dataclass(frozen=True)
class Defense:
    """A registered defense: its display name, its kind (``detection`` of inputs from their
    features, or a ``model`` defense) and the paper section it is evaluated in."""

    display: str
    kind: str
    section: str


DEFENSES = {
    "ac": Defense("AC", "detection", "§6.1"),
    "ss": Defense("SS", "detection", "§6.1"),
    "sr": Defense("SR", "detection", "§6.1"),
    "nc": Defense("Neural Cleanse", "model", "§6.2"),
    "prune": Defense("Pruning", "model", "§6.2"),
}
DETECTORS = tuple(key for key, defense in DEFENSES.items() if defense.kind == "detection")

__all__ = ["DEFENSES", "DETECTORS", "Defense", "AC_DECISIONS", "AC_REDUCTIONS", "SS_SCORES", "Detection",
           "activation_clustering", "spectral_signatures", "subspace_reconstruction", "NCOptions", "neural_cleanse",
           "anomaly_index", "flagged_classes", "target_ranking", "clean_sample", "reverse_engineer", "PruneOptions", "channel_ranking", "prune_order",
           "pruned", "pruning_curve"]
