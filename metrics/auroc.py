"""Threshold-free scores of a detection: the sample-level AUROC of a suspicion score, and the rank
of the target's statistic among the classes of a class-level detector."""
import math

import numpy as np


def auroc(scores, positive):
    """The area under the ROC curve of ``scores`` (higher = more suspicious) against ``positive``
    (True = malicious): the probability that a random malicious sample scores above a random
    benign one, ties counted half (the Mann–Whitney U over n₊·n₋, from average ranks).

    None where it is undefined: no sample of one of the two kinds, or a NaN score (a NaN has no
    place in the order). ±inf scores are ordered as any other."""
    scores, positive = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(positive, dtype=bool).reshape(-1)
    if len(scores) != len(positive):
        raise ValueError(f"auroc: {len(scores)} scores for {len(positive)} labels")
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0 or np.isnan(scores).any():
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # a group of equal scores shares the mean of the 1-based ranks it spans
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(mean_rank[inverse.reshape(-1)][positive].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)


def target_rank(statistic: dict, target) -> dict:
    """Where the target class stands among the classes of a class-level statistic (higher = more
    anomalous, the side every class detector's threshold flags): ``target_rank`` is 1 plus the
    number of classes whose statistic is strictly higher (1 = most anomalous), ``target_rank_ties``
    the number of other classes with the same value, ``n_classes`` the classes ranked. The rank is
    None where the target has no statistic or a NaN one; other classes' NaN never rank above it."""
    values = {str(label): float(value) for label, value in statistic.items()}
    own = values.get(str(target))
    if own is None or math.isnan(own):
        return {"target_rank": None, "target_rank_ties": None, "n_classes": len(values)}
    others = [value for label, value in values.items() if label != str(target)]
    return {"target_rank": 1 + sum(value > own for value in others),
            "target_rank_ties": sum(value == own for value in others), "n_classes": len(values)}
