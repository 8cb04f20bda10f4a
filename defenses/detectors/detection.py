"""Difference-based detections on feature matrices (paper §6.1), as pure functions.

Each takes an (N, d) feature matrix of inputs the model classifies as the target and returns a
:class:`Detection`: the method's own decision (``flagged``, plus the other decision rules it
offers in ``decisions``) and what is needed for the *oracle* F1, the best F1 any labeling or
threshold of the method's output allows when the ground truth picks it (``oracle_f1``). Every
decision rule and budget is an argument.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from metrics.auroc import auroc
from metrics.f1 import best_f1_over_thresholds, f1_score

from defenses.detectors.detector import Detector

AC_REDUCTIONS = ("pca", "ica")
AC_DECISIONS = ("clean_reference", "smaller", "relative_size")
SS_SCORES = ("centred", "uncentred")


@dataclass
class Detection:
    """``flagged``: the method's own decision (True = malicious). ``decisions``: every decision
    rule the method offers, by name (``flagged`` is one of them). ``scores``: outlier scores,
    higher = more suspicious, where the method has them. ``threshold_scores`` are score arrays
    and ``labelings`` candidate labelings over which :meth:`oracle_f1` maximises. ``row_facts``:
    where ``info`` holds facts that depend on which inputs are inspected, a function of the
    detection that recomputes them, which :meth:`subset` calls on each subset."""

    flagged: np.ndarray
    scores: np.ndarray = None
    threshold_scores: list = field(default_factory=list)
    labelings: list = field(default_factory=list)
    decisions: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)  # {form: Detection}: other forms computed beside it
    row_facts: object = None  # (Detection) -> dict of info recomputed on a subset of the rows

    def subset(self, rows) -> "Detection":
        """This detection restricted to ``rows`` (an index array): for a detector whose decision on one
        input does not depend on the others (an input-level one), run once over several pools' inputs."""
        take = lambda values: None if values is None else np.asarray(values)[rows]  # noqa: E731
        part = Detection(flagged=take(self.flagged), scores=take(self.scores),
                         threshold_scores=[take(values) for values in self.threshold_scores],
                         labelings=[take(values) for values in self.labelings],
                         decisions={name: take(values) for name, values in self.decisions.items()}, info=self.info,
                         variants={name: variant.subset(rows) for name, variant in self.variants.items()},
                         row_facts=self.row_facts)
        if self.row_facts is not None:
            part.info = {**self.info, **self.row_facts(part)}
        return part

    def own_f1(self, malicious) -> float:
        return f1_score(self.flagged, malicious)

    def decision_f1(self, malicious) -> dict:
        """F1 of every decision rule the method offers, by name."""
        return {name: f1_score(flagged, malicious) for name, flagged in self.decisions.items()}

    def auroc(self, malicious):
        """The threshold-free score: the AUROC of ``scores`` (higher = more suspicious) against the
        truth, ties counted half; None where the method gives no per-sample score (a clustering
        such as AC outputs labels only, and a ranking of labels is no score) or a pool holds inputs
        of one kind only."""
        return None if self.scores is None else auroc(self.scores, malicious)

    def oracle_f1(self, malicious) -> float:
        """The best F1 over the candidate labelings and thresholds, chosen with the ground truth:
        a diagnostic of how separable the output is, not a decision a defender can make."""
        candidates = [f1_score(labels, malicious) for labels in self.labelings]
        candidates += [best_f1_over_thresholds(scores, malicious) for scores in self.threshold_scores]
        return max(candidates) if candidates else self.own_f1(malicious)


def probabilities(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model``'s softmax of float ``images`` (on the CPU, batched on the model's device), without gradients."""
    device = next(model.parameters()).device
    if len(images) == 0:
        return torch.empty(0, 0)
    with torch.no_grad():
        return torch.cat([torch.softmax(model(images[start:start + batch_size].to(device)).float(), 1).cpu()
                          for start in range(0, len(images), batch_size)])


def _as_matrix(features) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    matrix = matrix.reshape(len(matrix), -1)
    if len(matrix) < 2:
        raise ValueError(f"a detection needs at least 2 samples, got {len(matrix)}")
    return matrix


def _reducer(reduce: str, components: int, seed: int):
    from sklearn.decomposition import PCA, FastICA

    if reduce == "pca":
        return PCA(n_components=components, random_state=seed)
    return FastICA(n_components=components, random_state=seed, whiten="unit-variance", max_iter=1000)


def activation_clustering(features, n_components: int = 10, reduce: str = "pca",
                          decision: str = "clean_reference", clean_features=None, seed: int = 0,
                          size_threshold: float = 0.35, n_init: int = 10) -> Detection:
    """Activation clustering (Chen et al. 2019; paper §3.3 and §6.1): reduce the dimension, split
    with k-means (k = 2), decide which cluster is malicious.

    Paper §6.1: "we first adopt independent component analysis to reduce the dimensionality of
    the latent representations of inputs to obtain the vectors of length 20. Then we use k-means
    to cluster the reduced representations into two groups." That literal setting is
    ``reduce="ica", n_components=20``. It is not the default because it cannot find even a plain
    two-cluster split reliably: FastICA whitens, so every one of the 20 components has unit
    variance, and the direction that separates the clusters, however much of the variance it
    carried, ends up with 1/20 of what k-means sees; k-means is rotation-invariant, so ICA's
    rotation cannot undo that, and on a few hundred samples the 19 noise directions offer splits
    of nearly the same inertia. The default reduces with PCA to 10 dimensions, which keeps each
    direction's variance (10 dimensions as Chen et al.; PCA as IBM ART's implementation).

    Decision rules (paper §3.3: AC analyses "whether each cluster is benign or malicious by
    exclusionary reclassification, relative size comparison, or silhouette score"):

    - ``clean_reference`` (default): the cluster whose centroid lies farther from the mean of
      ``clean_features`` (the defender's ~200 benign validation samples, paper §3.1), projected
      with the same reduction, is malicious. It needs no assumption about the poisoning rate,
      which matters at r′ = 1 where the two clusters are equally large.
    - ``smaller``: the smaller cluster is malicious.
    - ``relative_size``: the smaller cluster is malicious only if it holds at most
      ``size_threshold`` of the samples, otherwise nothing is flagged (Chen et al.).

    ``decisions`` holds every rule that applies (``clean_reference`` only with clean features).
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    if reduce not in AC_REDUCTIONS:
        raise ValueError(f"unknown AC reduction '{reduce}'; use one of {AC_REDUCTIONS}")
    if decision not in AC_DECISIONS:
        raise ValueError(f"unknown AC decision '{decision}'; use one of {AC_DECISIONS}")
    if decision == "clean_reference" and clean_features is None:
        raise ValueError("the AC decision 'clean_reference' needs clean_features (benign validation samples)")
    matrix = _as_matrix(features)
    components = max(1, min(n_components, matrix.shape[0] - 1, matrix.shape[1]))
    reducer = _reducer(reduce, components, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reduced = reducer.fit_transform(matrix)
    labels = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit_predict(reduced)
    sizes = np.bincount(labels, minlength=2)
    smaller = int(np.argmin(sizes))
    decisions = {"smaller": labels == smaller,
                 "relative_size": (labels == smaller) & (sizes[smaller] / len(labels) <= size_threshold)}
    info = {"cluster_sizes": sizes.tolist(), "components": components, "reduce": reduce}
    if clean_features is not None:
        clean_centre = reducer.transform(_as_matrix(clean_features)).mean(0)
        distance = [float(np.linalg.norm(reduced[labels == k].mean(0) - clean_centre)) if sizes[k] else 0.0
                    for k in range(2)]
        decisions["clean_reference"] = labels == int(np.argmax(distance))
        info["distance_to_clean"] = distance
    info["silhouette"] = (float(silhouette_score(reduced, labels)) if 1 < len(set(labels)) < len(labels)
                          else float("nan"))
    return Detection(flagged=decisions[decision], labelings=[labels == 0, labels == 1], decisions=decisions,
                     info=info)


def top_singular_direction(features) -> np.ndarray:
    """The top right singular vector of the centred features: spectral signatures' direction, which
    both score forms share (computed once per pool by the protocol; an SVD is most of SS's cost)."""
    matrix = _as_matrix(features)
    _, _, vt = np.linalg.svd(matrix - matrix.mean(0, keepdims=True), full_matrices=False)
    return vt[0]


def spectral_signatures(features, expected_fraction: float, removal_factor: float = 1.5,
                        score: str = "centred", direction: np.ndarray = None) -> Detection:
    """Spectral signatures (Tran et al. 2018; paper §3.3): "1) Perform singular vector
    decomposition on the centered features. 2) Calculate the outlier scores with the top right
    singular vector. 3) Remove data with the top-k scores."

    score "centred" (default, the paper and Tran et al.'s algorithm): ((x − μ)·v)².
    score "uncentred" (their released code, as IBM ART): |x·v| on the raw features, which breaks
    the ± symmetry of the centred score and so changes which side is removed when the two groups
    are about equally large (r′ = 1).

    Own rule: remove the top ``removal_factor``·ε·N scores, ε the expected malicious fraction
    (Tran et al.: 1.5). The oracle thresholds the *signed* projection in either direction, since
    the squared score folds both sides together. ``direction``: ``top_singular_direction(features)``
    when the caller already has it.
    """
    if score not in SS_SCORES:
        raise ValueError(f"unknown SS score '{score}'; use one of {SS_SCORES}")
    matrix = _as_matrix(features)
    centred = matrix - matrix.mean(0, keepdims=True)
    direction = top_singular_direction(matrix) if direction is None else direction
    projection = centred @ direction
    scores = projection ** 2 if score == "centred" else np.abs(matrix @ direction)
    count = min(len(scores), int(round(removal_factor * expected_fraction * len(scores))))
    flagged = np.zeros(len(scores), dtype=bool)
    flagged[np.argsort(-scores, kind="stable")[:count]] = True
    return Detection(flagged=flagged, scores=scores, threshold_scores=[projection, -projection],
                     decisions={"top_scores": flagged}, info={"flagged_count": count, "score": score})


def subspace_reconstruction(features, clean_features, energy: float = 0.9,
                            percentile: float = 95.0) -> Detection:
    """Subspace reconstruction (Javaheripi et al.; paper §6.1): "We choose 200 validated data and
    construct a subspace that can restore 90% of the energy of these samples ... compute the l2
    norm as the reconstruction loss for that sample. The max F1 score for each model is
    calculated by adjusting the threshold": the paper's rule is the oracle F1 over thresholds.
    ``flagged`` is a rule a defender could apply without labels, reported beside it: errors
    above the ``percentile``-th percentile of the reference errors.

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
    flagged = scores > threshold
    return Detection(flagged=flagged, scores=scores, threshold_scores=[scores], decisions={"percentile": flagged},
                     info={"rank": rank, "threshold": threshold})


# AC is always also run in these forms, so evaluation.json shows how much its result depends on
# them: the paper's literal ICA to 20 dimensions, and PCA to 10.
AC_VARIANTS = (("pca", 10), ("ica", 20))


def _run_ac(inputs, options, seed: int) -> Detection:
    protocol = inputs.protocol
    forms = dict.fromkeys([(protocol.ac_reduce, protocol.ac_components), *AC_VARIANTS])
    results = {f"{reduce}{k}": activation_clustering(inputs.features, k, reduce, protocol.ac_decision, inputs.reference,
                                                     seed) for reduce, k in forms}
    main = results[f"{protocol.ac_reduce}{protocol.ac_components}"]
    main.variants = results
    return main


def _run_ss(inputs, options, seed: int) -> Detection:
    protocol = inputs.protocol
    expected = inputs.expected_malicious / max(len(inputs.features), 1)
    direction = top_singular_direction(inputs.features)
    results = {score: spectral_signatures(inputs.features, expected, protocol.ss_removal_factor, score, direction)
               for score in SS_SCORES}
    main = results[protocol.ss_score]
    main.variants = results
    return main


def _run_sr(inputs, options, seed: int) -> Detection:
    protocol = inputs.protocol
    return subspace_reconstruction(inputs.features, inputs.reference, protocol.sr_energy, protocol.sr_percentile)


# The paper's §6.1 detectors; their options are the evaluation protocol's (evaluate.py --ac_*, --ss_*, --sr_*)
AC = Detector("ac", "AC", "Chen et al. 2019; paper §3.3, §6.1", "pool", _run_ac, paper=True,
              rule=lambda options, p: (f"{p.ac_reduce.upper()} to {p.ac_components} dimensions, k-means with k = 2, "
                                       f"rule {p.ac_decision}"))
SS = Detector("ss", "SS", "Tran et al. 2018; paper §3.3, §6.1", "pool", _run_ss, paper=True,
              rule=lambda options, p: (f"{p.ss_score} score, remove the top {p.ss_removal_factor:g}·ε·N (ε: the "
                                       f"pool's malicious share, an oracle budget)"))
SR = Detector("sr", "SR", "Javaheripi et al.; paper §6.1", "pool", _run_sr, headline="oracle", paper=True,
              rule=lambda options, p: (f"a subspace of {p.sr_energy:g} of the clean reference's energy, the max F1 "
                                       f"over thresholds of the reconstruction error (the paper's rule)"))
