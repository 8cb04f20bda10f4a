"""Backdoor defenses as pure functions (paper §6). Detection on feature matrices: AC, SS, SR."""
from defenses.detection import (AC_DECISIONS, AC_REDUCTIONS, SS_SCORES, Detection, activation_clustering,
                                spectral_signatures, subspace_reconstruction)

DETECTORS = ("ac", "ss", "sr")

__all__ = ["AC_DECISIONS", "AC_REDUCTIONS", "SS_SCORES", "Detection", "activation_clustering", "spectral_signatures", "subspace_reconstruction", "DETECTORS"]

from defenses.neural_cleanse import NCOptions, anomaly_index, flagged_classes, neural_cleanse  # noqa: E402
from defenses.pruning import mean_channel_activation, prune_order, pruned, pruning_curve  # noqa: E402

__all__ += ["NCOptions", "neural_cleanse", "anomaly_index", "flagged_classes", "mean_channel_activation",
            "prune_order", "pruned", "pruning_curve"]
