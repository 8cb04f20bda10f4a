"""Difference-based detections on feature matrices (paper §6.1), as pure functions.

Each takes an (N, d) feature matrix of inputs the model classifies as the target and returns a
:class:`Detection`: the method's own decision (``flagged``) plus what is needed to compute the
best F1 the method's output allows (``best_f1``). Every decision rule and budget is an argument.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from metrics.f1 import best_f1_over_thresholds, f1_score


@dataclass
class Detection:
    """``flagged``: the method's own decision (True = malicious). ``scores``: outlier scores,
    higher = more suspicious, where the method has them. ``threshold_scores`` are score arrays
    and ``labelings`` candidate labelings over which :meth:`best_f1` maximises (rule b)."""

    flagged: np.ndarray
    scores: np.ndarray = None
    threshold_scores: list = field(default_factory=list)
    labelings: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def own_f1(self, malicious) -> float:
        return f1_score(self.flagged, malicious)

    def best_f1(self, malicious) -> float:
        candidates = [f1_score(labels, malicious) for labels in self.labelings]
        candidates += [best_f1_over_thresholds(scores, malicious) for scores in self.threshold_scores]
        return max(candidates) if candidates else self.own_f1(malicious)


def _as_matrix(features) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    matrix = matrix.reshape(len(matrix), -1)
    if len(matrix) < 2:
        raise ValueError(f"a detection needs at least 2 samples, got {len(matrix)}")
    return matrix


def activation_clustering(features, n_components: int = 20, seed: int = 0, decision: str = "smaller",
                          size_threshold: float = 0.35, n_init: int = 10) -> Detection:
    """Activation clustering (Chen et al. 2019): FastICA to ``n_components`` dims (paper: 20),
    k-means with k = 2.

    FastICA returns unit-variance components, so a split along one direction carries only
    1/n_components of the variance k-means sees: with many components and few samples k-means
    can settle on another split of nearly equal inertia. ``n_init`` sets its restarts.

    decision "smaller": the smaller cluster is malicious. "relative_size": the smaller cluster
    is malicious only if it holds at most ``size_threshold`` of the samples, otherwise nothing
    is flagged (Chen et al.'s relative-size rule). Rule (b) takes the better of the two labelings.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    if decision not in ("smaller", "relative_size"):
        raise ValueError(f"unknown AC decision '{decision}'; use 'smaller' or 'relative_size'")
    matrix = _as_matrix(features)
    components = max(1, min(n_components, matrix.shape[0] - 1, matrix.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reduced = FastICA(n_components=components, random_state=seed, whiten="unit-variance",
                          max_iter=1000).fit_transform(matrix)
    labels = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit_predict(reduced)
    sizes = np.bincount(labels, minlength=2)
    smaller = int(np.argmin(sizes))
    flagged = labels == smaller
    if decision == "relative_size" and sizes[smaller] / len(labels) > size_threshold:
        flagged = np.zeros(len(labels), dtype=bool)
    silhouette = float(silhouette_score(reduced, labels)) if 1 < len(set(labels)) < len(labels) else float("nan")
    return Detection(flagged=flagged, labelings=[labels == 0, labels == 1],
                     info={"cluster_sizes": sizes.tolist(), "silhouette": silhouette, "components": components})


def spectral_signatures(features, expected_fraction: float, removal_factor: float = 1.5) -> Detection:
    """Spectral signatures (Tran et al. 2018): centre, top right singular vector v,
    score = ⟨x − μ, v⟩². Own rule: flag the top ``removal_factor``·ε·N scores, ε the expected
    malicious fraction. Rule (b) thresholds the *signed* projection in either direction, since the
    squared score folds both sides together (at ε = ½ the two groups can sit symmetrically)."""
    matrix = _as_matrix(features)
    centred = matrix - matrix.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    scores = projection ** 2
    count = min(len(scores), int(round(removal_factor * expected_fraction * len(scores))))
    flagged = np.zeros(len(scores), dtype=bool)
    flagged[np.argsort(-scores, kind="stable")[:count]] = True
    return Detection(flagged=flagged, scores=scores, threshold_scores=[projection, -projection],
                     info={"flagged_count": count})


def subspace_reconstruction(features, clean_features, energy: float = 0.9,
                            percentile: float = 95.0) -> Detection:
    """Subspace reconstruction: the principal subspace of the clean reference features keeping
    ``energy`` of their (centred) energy; score = ℓ₂ reconstruction error. Own rule: flag errors
    above the ``percentile``-th percentile of the reference errors. Rule (b): max F1 over thresholds.

    The reference must be held out from the evaluated pool (the protocol draws it from the
    training set's clean target-class images)."""
    matrix, reference = _as_matrix(features), _as_matrix(clean_features)
    mean = reference.mean(0, keepdims=True)
    _, singular, vt = np.linalg.svd(reference - mean, full_matrices=False)
    cumulative = np.cumsum(singular ** 2) / max(float((singular ** 2).sum()), 1e-300)
    rank = int(np.searchsorted(cumulative, energy) + 1)
    basis = vt[:rank]

    def errors(rows):
        centred = rows - mean
        return np.linalg.norm(centred - (centred @ basis.T) @ basis, axis=1)

    threshold = float(np.percentile(errors(reference), percentile))
    scores = errors(matrix)
    return Detection(flagged=scores > threshold, scores=scores, threshold_scores=[scores],
                     info={"rank": rank, "threshold": threshold})
