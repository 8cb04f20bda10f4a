"""The regularizers study's runs (the reduction methods at the last level and at every level, issue
43) and what C12 and C13 read from them: each method's runs by attack and seed, one number per
detector (or the detector-free linear-SVM separability), and per-detector paired differences with
the seed beside each, so that every verdict judges each detector apart and the seed is the unit."""
from defenses import DETECTORS, display_name
from experiments.records import Runs, detector_f1, mean_of, mean_sd, present, scored, separability_of
from models import LEVELS

SEPARABILITY = "svm"   # the detector-free row: 5-fold linear-SVM accuracy, mean over s1 s2 s3


def value_of(record, detector: str):
    """A detector's number on ``record`` (detector_f1), or for SEPARABILITY the linear SVM's accuracy."""
    if detector == SEPARABILITY:
        return mean_of([separability_of(record, level) for level in LEVELS])
    return detector_f1(record, detector)


def shown(detector: str) -> str:
    return "linear SVM" if detector == SEPARABILITY else display_name(detector)


def methods(runs: Runs) -> dict:
    """{method label: {(attack, seed): record}} of the evaluated regularizers-study runs ("RBT",
    "SL-MMDR", "ML-SWD", …), in the order first seen."""
    found = {}
    for record in runs.study("regularizers"):
        c = record["config"]
        if record["evaluation"]:
            found.setdefault(c.method, {})[(c.attack_name, c.seed)] = record
    return found


def regularizers(runs: Runs) -> list:
    """[(display, SL label, ML label)] of every regulariser with both levels in the study."""
    labels = list(methods(runs))
    out = []
    for label in labels:
        if label.startswith("ML-") and "SL-" + label[3:] in labels:
            out.append((label[3:], "SL-" + label[3:], label))
    return out


def differences(runs: Runs, first: str, second: str, detectors) -> dict:
    """{detector: [(seed, value(first) − value(second))]} over the (attack, seed) cells both methods ran."""
    found = methods(runs)
    mine, theirs = found.get(first, {}), found.get(second, {})
    out = {detector: [] for detector in detectors}
    for cell in mine:
        if cell in theirs:
            for detector in detectors:
                a, b = value_of(mine[cell], detector), value_of(theirs[cell], detector)
                out[detector].append((cell[1], a - b if present(a, b) else None))
    return out


def table(runs: Runs, detectors) -> tuple:
    """(header, rows): one row per detector, one column per method, each cell 'F1 ± sd (threshold-free
    score)' over the method's attacks and seeds (records.scored); the separability row has none."""
    found = methods(runs)
    rows = [[shown(detector)] + [mean_sd([value_of(r, detector) for r in records.values()])
                                 if detector == SEPARABILITY else scored(list(records.values()), detector)
                                 for records in found.values()] for detector in detectors]
    return ["detector"] + list(found), rows


def every_detector() -> tuple:
    return tuple(DETECTORS) + (SEPARABILITY,)
