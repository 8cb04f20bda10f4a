"""Backdoor defenses as pure functions (paper §6), and their registries with display names.

Three kinds, one subpackage each: detectors (``defenses/detectors/``) flag inputs or classes from
representations or from the model's outputs (AC, SS, SR of §6.1, and those registered after them;
``DETECTORS``, see defenses/detectors/detector.py); model defenses (``defenses/repair/``) inspect a
trained model (Neural Cleanse's trigger synthesis, pruning, §6.2); erasing defenses
(``defenses/erasing/``) train the backdoor out of a model with a little clean data (fine-tuning,
NAD, ARGD; beyond the paper). The defender's own clean data is ``defenses/defender.py``.
Reports and figures take display names from ``DETECTORS`` and ``DEFENSES``.
"""
from dataclasses import dataclass

from defenses.detectors import asset, badexpert, beatrix, detection, ibd_psc, scale_up, scan, spectre, strip, ted
from defenses.detectors.detection import (AC_DECISIONS, AC_REDUCTIONS, SS_SCORES, Detection, activation_clustering,
                                spectral_signatures, subspace_reconstruction)
from defenses.detectors.detector import CONSUMES, ClassVerdict, Detector, DetectorInputs
from defenses.erasing.train import (ARGDOptions, ErasingOptions, FinetuneOptions, NADOptions, argd, defender_data, finetune,
                              nad)
from defenses.repair.neural_cleanse import (NCCheckpoint, NCOptions, anomaly_index, clean_index, clean_sample, flagged_classes, neural_cleanse,
                                     reverse_engineer, target_ranking)
from defenses.repair.pruning import PruneOptions, channel_ranking, prune_order, pruned, pruning_curve


@dataclass(frozen=True)
class Defense:
    """A registered defense: its display name, its kind (``detection`` of inputs from their
    features, a ``model`` defense that inspects a model, or an ``erasing`` one that retrains it) and
    the paper section it is evaluated in."""

    display: str
    kind: str
    section: str


DETECTORS = {}  # {name: Detector}, in registration order: what evaluate.py runs (defenses/detectors/detector.py)


def register_detector(detector: Detector) -> Detector:
    """Add ``detector`` to DETECTORS (a test may register one of its own)."""
    if detector.name in DETECTORS or detector.name in DEFENSES:
        raise ValueError(f"a defense named '{detector.name}' is registered already")
    DETECTORS[detector.name] = detector
    return detector


DEFENSES = {
    "nc": Defense("Neural Cleanse", "model", "§6.2"),
    "prune": Defense("Pruning", "model", "§6.2"),
    "finetune": Defense("Fine-tuning", "erasing", "NAD's baseline; beyond the paper"),
    "nad": Defense("NAD", "erasing", "Li et al., ICLR 2021; beyond the paper"),
    "argd": Defense("ARGD", "erasing", "Xia et al., IJCAI 2022; beyond the paper"),
}
ERASERS = tuple(key for key, defense in DEFENSES.items() if defense.kind == "erasing")

register_detector(detection.AC)
register_detector(detection.SS)
register_detector(detection.SR)
register_detector(spectre.SPECTRE)
register_detector(strip.STRIP)
register_detector(scan.SCAN)
register_detector(beatrix.BEATRIX)
register_detector(beatrix.BEATRIX_CLASS)
register_detector(scale_up.SCALE_UP)
register_detector(ibd_psc.IBD_PSC)
register_detector(ted.TED)
register_detector(badexpert.BADEXPERT)
register_detector(asset.ASSET)
# The detectors of the paper's §6.1: claims C3, C4 and C6 are about these, whatever else is registered
PAPER_DETECTORS = tuple(name for name, detector in DETECTORS.items() if detector.paper)


def display_name(name: str) -> str:
    """A defense's or a detector's display name."""
    return DETECTORS[name].display if name in DETECTORS else DEFENSES[name].display

__all__ = ["DEFENSES", "DETECTORS", "PAPER_DETECTORS", "register_detector", "display_name", "Detector",
           "DetectorInputs", "ClassVerdict", "CONSUMES", "ERASERS", "ErasingOptions", "FinetuneOptions", "NADOptions", "ARGDOptions",
           "finetune", "nad", "argd", "defender_data", "Defense", "AC_DECISIONS", "AC_REDUCTIONS", "SS_SCORES", "Detection",
           "activation_clustering", "spectral_signatures", "subspace_reconstruction", "NCOptions", "NCCheckpoint", "neural_cleanse",
           "anomaly_index", "flagged_classes", "target_ranking", "clean_index", "clean_sample", "reverse_engineer", "PruneOptions", "channel_ranking", "prune_order",
           "pruned", "pruning_curve"]
