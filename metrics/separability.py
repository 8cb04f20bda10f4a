"""A detector-free measure of how separable two sets of representations are.

The backdoor-toolbox's ``visualize.py`` (vtu81/backdoor-toolbox @9d4d909) prints, for the target
class's clean and poisoned features, ``silhouette_score(feats, labels)`` (every method) and, with
``-method oracle``, the accuracy of ``svm.LinearSVC()`` on the features it was fitted on
(``oracle_visualizer.fit_transform``: ``clf.fit(X, y)``, then ``clf.score(X, y)``). Both ask
whether *some* simple rule, chosen with the ground truth, could split the two groups, so attacks
can be compared at every level without choosing a detector. Here the accuracy is cross-validated,
because a training accuracy says nothing once the dimension reaches the sample count: any n ≤ d + 1
points in general position are linearly separable, so a linear SVM fits 1.0 on 500 + 500
representations of 4096 dimensions even when both groups come from one distribution.
"""
import warnings

import numpy as np

from utils.errors import ParameterError


def _matrix(rows, name: str) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim == 0:
        raise ValueError(f"{name} must be a sequence of rows, got a scalar")
    matrix = matrix.reshape(len(matrix), int(np.prod(matrix.shape[1:])))
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return matrix


def _cross_validated_svm(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> dict:
    """Mean accuracy (and balanced accuracy) of a standardised LinearSVC over stratified folds.

    The scaler is fitted on the training folds only, so the held-out fold leaks nothing into it.
    Standardising is ours: liblinear's coordinate descent converges slowly, and weighs dimensions
    unevenly, on features whose scales differ by orders of magnitude, as a network's levels do.
    LinearSVC keeps the toolbox's defaults (C = 1, squared hinge, 1000 iterations)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    accuracies, balanced, converged = [], [], True
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels):
        model = make_pipeline(StandardScaler(), LinearSVC(random_state=seed))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(features[train], labels[train])
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        correct = model.predict(features[test]) == labels[test]
        accuracies.append(float(correct.mean()))
        balanced.append(float(np.mean([correct[labels[test] == group].mean() for group in (0, 1)])))
    return {"svm_accuracy": float(np.mean(accuracies)), "svm_balanced_accuracy": float(np.mean(balanced)),
            "svm_fold_accuracies": accuracies, "svm_folds": folds, "svm_converged": bool(converged)}


def separability(benign, malicious, seed: int = 0, folds: int = 5) -> dict:
    """How separable ``benign`` (n_b, ...) and ``malicious`` (n_m, ...) representations are.

    - ``svm_accuracy``: mean accuracy of a linear SVM (sklearn ``LinearSVC`` on standardised
      features) over ``folds`` stratified, shuffled folds (``seed`` shuffles them); 1 = linearly
      separable on unseen samples, the majority share (``majority_rate``; 0.5 for equal groups) =
      no linear signal. ``svm_balanced_accuracy`` averages the two groups' recalls, so its chance
      level is 0.5 whatever the group sizes. The toolbox reports the training accuracy instead
      (see the module docstring for why that is not used).
    - ``silhouette``: sklearn's silhouette score of the two groups on the raw features, Euclidean
      (as the toolbox): near 1 = two tight, distant groups, near 0 = overlapping ones.

    Small groups: with fewer than ``folds`` samples in a group, as many folds as the smaller group
    has samples are used (``svm_folds``); with fewer than 2, ``svm_accuracy`` is None and
    ``reason`` says why. The silhouette needs both groups and at least 3 samples in all.
    Rows are flattened, so feature maps can be passed as they are.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ParameterError("folds", f"must be an integer of at least 2, got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError("seed", f"must be an integer, got {seed!r}")
    benign, malicious = _matrix(benign, "benign"), _matrix(malicious, "malicious")
    n_benign, n_malicious = len(benign), len(malicious)
    if n_benign and n_malicious and benign.shape[1] != malicious.shape[1]:
        raise ValueError(f"benign and malicious rows differ in dimension: {benign.shape[1]} vs {malicious.shape[1]}")
    result = {"svm_accuracy": None, "svm_balanced_accuracy": None, "svm_fold_accuracies": [], "svm_folds": 0,
              "svm_converged": None, "silhouette": None, "n_benign": n_benign, "n_malicious": n_malicious,
              "majority_rate": (max(n_benign, n_malicious) / (n_benign + n_malicious)
                                if n_benign + n_malicious else None),
              "reason": None}
    if min(n_benign, n_malicious) < 2:
        result["reason"] = (f"a group has fewer than 2 samples (benign {n_benign}, malicious {n_malicious}): "
                            f"no cross-validated SVM" + ("" if min(n_benign, n_malicious) else ", no silhouette"))
    features = np.vstack([benign, malicious]) if n_benign and n_malicious else None
    labels = np.r_[np.zeros(n_benign, int), np.ones(n_malicious, int)]
    if features is not None and len(features) >= 3:
        from sklearn.metrics import silhouette_score

        result["silhouette"] = float(silhouette_score(features, labels, metric="euclidean"))
    if min(n_benign, n_malicious) >= 2:
        result.update(_cross_validated_svm(features, labels, min(folds, n_benign, n_malicious), seed))
    return result
