"""Backdoor defenses as pure functions (paper §6). Detection on feature matrices: AC, SS, SR."""
from defenses.detection import Detection, activation_clustering, spectral_signatures, subspace_reconstruction

DETECTORS = ("ac", "ss", "sr")

__all__ = ["Detection", "activation_clustering", "spectral_signatures", "subspace_reconstruction", "DETECTORS"]
