"""F1 of a detection, for a fixed decision and for the best threshold a score allows."""
import numpy as np


def f1_score(flagged, malicious) -> float:
    """F1 with the malicious samples as the positive class."""
    flagged, malicious = np.asarray(flagged, dtype=bool), np.asarray(malicious, dtype=bool)
    true_positive = int((flagged & malicious).sum())
    if true_positive == 0:
        return 0.0
    return 2 * true_positive / (int(flagged.sum()) + int(malicious.sum()))


def best_f1_over_thresholds(scores, malicious) -> float:
    """max over t of F1(score ≥ t): flag the k highest scores, for every k."""
    scores, malicious = np.asarray(scores, dtype=float), np.asarray(malicious, dtype=bool)
    if not malicious.any():
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(malicious[order])
    flagged = np.arange(1, len(scores) + 1)
    # ties: only cut where the score changes, so equal scores are flagged together
    cut = np.r_[scores[order][1:] != scores[order][:-1], True]
    f1 = 2 * hits / (flagged + malicious.sum())
    return float(f1[cut].max())
