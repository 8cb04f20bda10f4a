"""Backdoor defenses as pure functions (paper §6), and their registry with display names.

Detections work on feature matrices (AC, SS, SR, §6.1); model defenses work on a trained model
(Neural Cleanse, pruning, §6.2); erasing defenses train the backdoor out of a model with a little
clean data (fine-tuning, NAD, ARGD; beyond the paper). Reports and figures take display names
from ``DEFENSES``.
"""
from dataclasses import dataclass

from defenses.detection import (AC_DECISIONS, AC_REDUCTIONS, SS_SCORES, Detection, activation_clustering,
                                spectral_signatures, subspace_reconstruction)
from defenses.erasing import (ARGDOptions, ErasingOptions, FinetuneOptions, NADOptions, argd, defender_data, finetune,
                              nad)
from defenses.neural_cleanse import (NCCheckpoint, NCOptions, anomaly_index, clean_index, clean_sample, flagged_classes, neural_cleanse,
                                     reverse_engineer, target_ranking)
from defenses.pruning import PruneOptions, channel_ranking, prune_order, pruned, pruning_curve


@dataclass(frozen=True)
class Defense:
    """A registered defense: its display name, its kind (``detection`` of inputs from their
    features, a ``model`` defense that inspects a model, or an ``erasing`` one that retrains it) and
    the paper section it is evaluated in."""

    display: str
    kind: str
    section: str


DEFENSES = {
    "ac": Defense("AC", "detection", "§6.1"),
    "ss": Defense("SS", "detection", "§6.1"),
    "sr": Defense("SR", "detection", "§6.1"),
    "nc": Defense("Neural Cleanse", "model", "§6.2"),
    "prune": Defense("Pruning", "model", "§6.2"),
    "finetune": Defense("Fine-tuning", "erasing", "NAD's baseline; beyond the paper"),
    "nad": Defense("NAD", "erasing", "Li et al., ICLR 2021; beyond the paper"),
    "argd": Defense("ARGD", "erasing", "Xia et al., IJCAI 2022; beyond the paper"),
}
ERASERS = tuple(key for key, defense in DEFENSES.items() if defense.kind == "erasing")
DETECTORS = tuple(key for key, defense in DEFENSES.items() if defense.kind == "detection")

__all__ = ["DEFENSES", "DETECTORS", "ERASERS", "ErasingOptions", "FinetuneOptions", "NADOptions", "ARGDOptions",
           "finetune", "nad", "argd", "defender_data", "Defense", "AC_DECISIONS", "AC_REDUCTIONS", "SS_SCORES", "Detection",
           "activation_clustering", "spectral_signatures", "subspace_reconstruction", "NCOptions", "NCCheckpoint", "neural_cleanse",
           "anomaly_index", "flagged_classes", "target_ranking", "clean_index", "clean_sample", "reverse_engineer", "PruneOptions", "channel_ranking", "prune_order",
           "pruned", "pruning_curve"]
