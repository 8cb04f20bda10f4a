"""SCAn, the statistical contamination analyzer (Tang et al., "Demon in the Variant", USENIX
Security 2021), after the authors' ``pysrc/SCAn.py`` (TDteach/Demon-in-the-Variant @2da3942).

SCAn models a representation as r = μ + ε: an identity μ ~ N(0, Su) shared by a class and a
variation ε ~ N(0, Se) shared by every class. It fits (Su, Se) on a clean reserve of every class
(``build_global_model``: the EM of the joint Bayesian face model), then asks of each class of the
inspected set whether two identities explain it better than one (``build_local_model``: a
two-subgroup split, ``find_split``, and a likelihood-ratio statistic, ``calc_test``), and flags
the classes whose statistic is an outlier among the classes (``calc_anomaly_index``:
|a − median(a)| / (1.4826·MAD) with a = statistic / max(statistic)).

The defender's data, as the cleansers built on the reference use them (vtu81/backdoor-toolbox
``cleansers_tool_box/scan.py::cleanser``, SCLBD/BackdoorBench ``detection_pretrain/scan.py``):
the global model sees the clean reserve only; the local model sees the inspected set and the
clean reserve together, so that inside a flagged class the subgroup holding fewer clean-reserve
samples can be called the poisoned one.

:func:`scan` is the reference's computation vectorised: its per-sample Python loops become
matrix products, and with the same random initial splits it reproduces the reference's anomaly
indices to 1e-8 and its subgroups exactly (checked against pysrc/SCAn.py on synthetic classes).
Beyond that it adds a PCA for large d, a seeded generator instead of the global
``np.random``, exact bookkeeping of which rows are clean-reserve rows (the cleansers miscount
one), a finite anomaly index when the MAD is 0, and a second identity estimate computed beside
the reference's. :class:`ScanOptions` says where each default comes from, and
docs/detectors/scan.md lists every departure with its reason.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from utils.params import check_params, param
from defenses.detectors.detector import ClassVerdict, Detector

THRESHOLDS = {"e2": math.exp(2), "e": math.e}
IDENTITY_ESTIMATES = ("reference", "posterior_mean")
POISON_GROUP_RULES = ("fewer_clean", "smaller")
REDUCE_FITS = ("clean", "inspected_and_clean")
ANOMALY_SIDES = ("two_sided", "upper")


@dataclass
class ScanOptions:
    """SCAn's parameters; each is a flag ``--scan_<name>`` where the evaluation exposes them."""

    threshold: str = param("e2", "anomaly index above which a class is flagged: e2 = e² ≈ 7.39 (BackdoorBench "
                           "detection_pretrain/scan.py, the Beatrix paper) or e ≈ 2.72 (backdoor-toolbox "
                           "cleansers_tool_box/scan.py); the authors' pysrc/SCAn.py leaves it to the caller",
                           choices=tuple(THRESHOLDS))
    em_max_iterations: int = param(100, "at most this many EM iterations of the global model (reference: "
                                   "pysrc/SCAn.py build_global_model, 100)", low=1)
    em_tolerance: float = param(1e-2, "the global EM stops once ‖ΔSu‖_F + ‖ΔSe‖_F falls below this, an absolute "
                                "amount in the features' squared units (reference: pysrc/SCAn.py EPS = 1e-2; "
                                "backdoor-toolbox and BackdoorBench use 1e-5)", low=0.0, low_open=True)
    split_max_steps: int = param(100, "at most this many reassignment steps of each class's two-subgroup split "
                                 "(reference: pysrc/SCAn.py find_split, 100)", low=1)
    reduce_dim: int = param(64, "project the features by PCA to this many dimensions when they have more (0: "
                            "never). Ours, as the project's notes ran the reference: its EM pseudo-inverts K + 1 "
                            "d×d matrices per iteration (K classes, up to 100 iterations) and estimates Se from the "
                            "clean reserve alone, which at d = 4096 is slow and singular; PCA to 64, fitted on the "
                            "clean reserve, is the setting the notes validated the reference with on real "
                            "features", low=0)
    reduce_fit: str = param("clean", "data the PCA is fitted on: clean = the clean reserve alone (the notes' "
                            "setting); inspected_and_clean = both sets, which keeps by construction a direction "
                            "only the inspected (possibly poisoned) samples vary in, as the unreduced reference "
                            "would see it (ours; the reference does not reduce)", choices=REDUCE_FITS)
    identity_estimate: str = param("reference", "a class's identity μ in the test statistic: reference = "
                                   "Se(N·Su + Se)⁺Σx as pysrc/SCAn.py calc_test computes it (so do the toolbox and "
                                   "BackdoorBench); posterior_mean = Se(N·Su + Se)⁺·Su·Se⁺Σx, the formula the "
                                   "same file's build_global_model uses (the posterior mean E[μ | x₁..x_N])",
                                   choices=IDENTITY_ESTIMATES)
    poison_group: str = param("fewer_clean", "which subgroup of a flagged class is flagged: fewer_clean = the one "
                              "holding fewer clean-reserve samples (backdoor-toolbox and BackdoorBench cleansers); "
                              "smaller = the one holding fewer inspected samples", choices=POISON_GROUP_RULES)
    anomaly_side: str = param("two_sided", "two_sided = |a − median|/(1.4826·MAD) as pysrc/SCAn.py "
                              "calc_anomaly_index; upper = max(0, a − median)/(1.4826·MAD), the variant commented "
                              "out in the authors' msrc/calc_anomaly_index.m", choices=ANOMALY_SIDES)

    def __post_init__(self):
        check_params(self)


@dataclass
class ScanResult:
    """SCAn's answer on one level.

    Per class (in the order of ``classes``, the sorted labels of the clean reserve):
    ``statistic`` (calc_test's value), ``anomaly_index`` (J), ``flagged_classes`` (J above
    ``threshold``), and for every class, flagged or not, ``poison_subgroup`` (the subgroup the
    option's rule would call poisoned) and ``subgroup_sizes`` ({inspected, clean} counts of
    subgroups 0 and 1).

    Per inspected sample (N,): ``labels`` (as given), ``subgroup`` (0 or 1, its class's split)
    and ``flagged`` (True for the samples of the poisoned subgroup of a flagged class, as the
    cleansers remove them); ``decisions`` holds ``flagged`` under every subgroup rule, by name.
    ``statistic_by_estimate`` and ``anomaly_index_by_estimate`` give both identity estimates (same
    split), so a report can show how much a verdict depends on that choice; ``info["flagged_by_variant"]``
    the classes each "<identity estimate>/<threshold>" flags, and ``info["verdict_reads"]`` the one
    ``flagged_classes`` follows."""

    classes: list
    labels: np.ndarray
    statistic: np.ndarray
    anomaly_index: np.ndarray
    threshold: float
    flagged_classes: list
    flagged: np.ndarray
    subgroup: np.ndarray
    poison_subgroup: np.ndarray
    subgroup_sizes: dict
    decisions: dict = field(default_factory=dict)
    statistic_by_estimate: dict = field(default_factory=dict)
    anomaly_index_by_estimate: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def by_class(self, values) -> dict:
        return {int(c): float(v) for c, v in zip(self.classes, values)}

    def f1_in_class(self, label: int, poisoned) -> dict:
        """Per-sample F1 inside class ``label`` against ``poisoned`` (bool (N,), the ground truth):
        ``own``, the flags SCAn raises there (none unless the class is flagged); ``rule``, the
        subgroup the poison-group rule picks, as if the class were flagged; ``oracle``, the better
        of the two subgroups, chosen with the ground truth (a diagnostic of the split, not a
        decision a defender can make)."""
        from metrics.f1 import f1_score

        members = self.labels == label
        truth = np.asarray(poisoned, dtype=bool)[members]
        subgroup = self.subgroup[members]
        pick = int(self.poison_subgroup[self.classes.index(int(label))])
        return {"own": f1_score(self.flagged[members], truth), "rule": f1_score(subgroup == pick, truth),
                "oracle": max(f1_score(subgroup == 0, truth), f1_score(subgroup == 1, truth))}

    def to_dict(self) -> dict:
        """JSON-able: everything per class, and the indices of the flagged inspected samples."""
        return {"classes": [int(c) for c in self.classes],
                "statistic": self.by_class(self.statistic),
                "anomaly_index": self.by_class(self.anomaly_index),
                "threshold": float(self.threshold),
                "flagged_classes": [int(c) for c in self.flagged_classes],
                "flagged_indices": np.flatnonzero(self.flagged).tolist(),
                "poison_subgroup": {int(c): int(g) for c, g in zip(self.classes, self.poison_subgroup)},
                "subgroup_sizes": {int(c): sizes for c, sizes in self.subgroup_sizes.items()},
                "statistic_by_estimate": {name: self.by_class(v) for name, v in self.statistic_by_estimate.items()},
                "anomaly_index_by_estimate": {name: self.by_class(v)
                                              for name, v in self.anomaly_index_by_estimate.items()},
                "info": dict(self.info)}

    def to_verdict(self):
        """The registry's class-level answer (defenses.detectors.detector.ClassVerdict), keyed by class."""
        summary = self.to_dict()
        # the verdict's statistic is the anomaly index J, the value the threshold applies to;
        # calc_test's own value goes along as scan_statistic
        info = {"scan_statistic": summary["statistic"], **{key: summary[key] for key in (
            "poison_subgroup", "subgroup_sizes", "statistic_by_estimate", "anomaly_index_by_estimate")}, **self.info}
        return ClassVerdict(statistic=self.by_class(self.anomaly_index), flagged_classes=list(self.flagged_classes),
                            flagged=self.flagged, threshold=float(self.threshold), info=info)


def _matrix(values, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    matrix = matrix.reshape(len(matrix), -1)
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} hold a non-finite value")
    return matrix


def _labels(values, count: int, name: str) -> np.ndarray:
    labels = np.asarray(values).reshape(-1)
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} entries for {count} feature rows")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{name} must be integer class labels")
        labels = labels.astype(np.int64)
    return labels


def _covariance(rows: np.ndarray) -> np.ndarray:
    """np.cov over samples with ddof 1, as the reference (``np.cov(np.transpose(u))``), always 2-D."""
    return np.atleast_2d(np.cov(rows, rowvar=False))


def global_model(features: np.ndarray, labels: np.ndarray, classes: np.ndarray, max_iterations: int,
                 tolerance: float) -> dict:
    """``build_global_model``: Su and Se by EM on the clean reserve.

    Start from the class means (u) and the residuals (e), Su = cov(u), Se = cov(e). Each
    iteration: F = Se⁺, G_k = −(n_k·Su + Se)⁺·Su·F, the class identity μ_k = −Se·G_k·Σ_{i∈k} xᵢ
    (the posterior mean of the joint Bayesian model; the reference's per-sample loop summed),
    then Su = cov(μ of each sample's class), Se = cov(x − μ). Stop when
    ‖ΔSu‖_F + ‖ΔSe‖_F < ``tolerance`` or after ``max_iterations``. The authors' MATLAB
    (msrc/global_model.m) discards the model when the cap is reached; the Python keeps the last
    iterate, and so does this (``converged`` in the result says which happened)."""
    centred = features - features.mean(0)
    index = np.searchsorted(classes, labels)
    counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
    sums = np.zeros((len(classes), features.shape[1]))
    np.add.at(sums, index, centred)
    identity = sums / counts[:, None]
    su, se = _covariance(identity[index]), _covariance(centred - identity[index])
    iterations, converged = 0, False
    while iterations < max_iterations:
        iterations += 1
        f = np.linalg.pinv(se)
        su_f = su @ f
        identity = np.stack([se @ np.linalg.pinv(count * su + se) @ su_f @ total for count, total in zip(counts, sums)])
        new_su, new_se = _covariance(identity[index]), _covariance(centred - identity[index])
        change = np.linalg.norm(new_su - su) + np.linalg.norm(new_se - se)
        su, se = new_su, new_se
        if change < tolerance:
            converged = True
            break
    return {"Su": su, "Se": se, "iterations": iterations, "converged": converged}


def find_split(rows: np.ndarray, f: np.ndarray, rng: np.random.Generator, max_steps: int):
    """``find_split``: two subgroups by alternating means and reassignment in the metric F = Se⁺.

    A random half-split (each sample in subgroup 1 with probability ½, at least one sample in
    each); then, up to ``max_steps`` times: u₁, u₂ = the subgroups' means, and xᵢ joins subgroup 1
    iff (u₁ᵀFu₁ − u₂ᵀFu₂) − 2xᵢᵀF(u₁ − u₂) < 0, i.e. iff it is nearer u₁ in the metric F. It stops
    when no sample moves, when every sample swaps (the reference's second test), or when a
    subgroup empties, and returns the assignment with the means of the last step that had two
    subgroups, as the reference does."""
    count = len(rows)
    if count == 1:
        return np.zeros(1, dtype=bool), rows[0].copy(), rows[0].copy()
    draw = rng.random(count)
    ones = draw >= 0.5
    if not ones.any():
        ones[0] = True
    if ones.all():
        ones[0] = False
    mean_one = mean_zero = None
    for _ in range(max_steps):
        if ones.all() or not ones.any():
            break
        mean_one, mean_zero = rows[ones].mean(0), rows[~ones].mean(0)
        bias = mean_one @ f @ mean_one - mean_zero @ f @ mean_zero
        moved = bias - 2.0 * (rows @ (f @ (mean_one - mean_zero))) < 0
        unchanged, swapped = np.array_equal(moved, ones), np.array_equal(moved, ~ones)
        ones = moved
        if unchanged or swapped:
            break
    return ones, mean_one, mean_zero


def identity_of(rows: np.ndarray, su: np.ndarray, se: np.ndarray, f: np.ndarray, estimate: str) -> np.ndarray:
    """The single identity μ that the one-identity hypothesis fits to a class of N rows.

    ``reference``: μ = Se·(N·Su + Se)⁺·Σxᵢ, calc_test's G = −(N·Su + Se)⁺ without the factor
    Su·F that build_global_model's G carries. ``posterior_mean``: μ = Se·(N·Su + Se)⁺·Su·F·Σxᵢ,
    build_global_model's formula, which equals Su·(N·Su + Se)⁻¹·Σxᵢ = E[μ | x₁..x_N] when Se is
    invertible. The two differ in general: along a direction Su does not span, the posterior
    mean is 0 (no class differs from another there), while the reference's estimate keeps
    (nearly, exactly where Se does not couple that direction to others) the class sum Σxᵢ
    itself, N times the class mean."""
    inverse = np.linalg.pinv(len(rows) * su + se)
    total = rows.sum(0)
    if estimate == "reference":
        return se @ inverse @ total
    return se @ inverse @ su @ f @ total


def split_statistic(rows: np.ndarray, ones: np.ndarray, mean_one: np.ndarray, mean_zero: np.ndarray,
                   identity: np.ndarray, f: np.ndarray) -> float:
    """``calc_test``: (1/N)·Σᵢ [(xᵢ − μ)ᵀF(xᵢ − μ) − (xᵢ − u_{g(i)})ᵀF(xᵢ − u_{g(i)})], the mean gain
    in log-likelihood (×2, Gaussian with covariance Se) of two identities u₁, u₂ over one, μ.
    Written as the reference writes it: [n₁(μᵀFμ − u₁ᵀFu₁) + n₂(μᵀFμ − u₂ᵀFu₂) −
    2Σᵢ xᵢᵀF(μ − u_{g(i)})] / N."""
    count = len(rows)
    in_one = int(ones.sum())
    mu_f_mu = identity @ f @ identity
    value = in_one * (mu_f_mu - mean_one @ f @ mean_one) + (count - in_one) * (mu_f_mu - mean_zero @ f @ mean_zero)
    value -= 2.0 * (rows[ones].sum(0) @ f @ (identity - mean_one) + rows[~ones].sum(0) @ f @ (identity - mean_zero))
    return float(value / count)


def anomaly_index(statistic: np.ndarray, side: str = "two_sided") -> np.ndarray:
    """``calc_final_score``/``calc_anomaly_index``: a = statistic / max(statistic), then
    |a − median(a)| / (1.4826·MAD(a)) (``upper``: only the excess above the median). Where the MAD
    is 0 (half the classes or more share the median's value) a class off the median gets +inf
    and the others 0, as Neural Cleanse's index here, where the reference would divide by zero."""
    values = np.asarray(statistic, dtype=np.float64)
    scale = np.max(values)
    normalised = values / scale if scale != 0 else values
    median = np.median(normalised)
    deviation = np.abs(normalised - median) if side == "two_sided" else np.maximum(normalised - median, 0.0)
    mad = 1.4826 * np.median(np.abs(normalised - median))
    if mad == 0:
        return np.where(deviation > 0, np.inf, 0.0)
    return deviation / mad


def _reduce(inspected: np.ndarray, clean: np.ndarray, options: ScanOptions, seed: int):
    """PCA to ``reduce_dim`` dimensions when the features have more (see ScanOptions.reduce_dim)."""
    dim = inspected.shape[1]
    if options.reduce_dim == 0 or dim <= options.reduce_dim:
        return inspected, clean, {"reduced": False, "dim": dim}
    from sklearn.decomposition import PCA

    fit_on = clean if options.reduce_fit == "clean" else np.vstack([inspected, clean])
    components = min(options.reduce_dim, len(fit_on) - 1)
    # randomized SVD keeps N×4096 fits well under a second; seeded, so it is deterministic
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed).fit(fit_on)
    return (pca.transform(inspected), pca.transform(clean),
            {"reduced": True, "dim": dim, "reduced_dim": int(components), "reduce_fit": options.reduce_fit,
             "explained_variance": float(pca.explained_variance_ratio_.sum())})


def scan(features, labels, clean_features, clean_labels, options: ScanOptions = None, seed: int = 0) -> ScanResult:
    """SCAn on one level.

    ``features`` (N, d), ``labels`` (N,): the inspected set, a sample of the training set as
    labelled (poisoned samples carry the target label). ``clean_features`` (M, d),
    ``clean_labels`` (M,): the clean reserve, samples the attacker never touched, of every class
    the inspected set holds (the global model needs every class). ``seed`` draws the random
    initial splits (the reference's ``np.random.rand``) and seeds the PCA.

    Steps: reduce the dimension (ScanOptions.reduce_dim); fit Su, Se on the clean reserve
    (:func:`global_model`); centre the union of both sets on its own mean (build_local_model);
    per class, split its union rows in two (:func:`find_split`) and compute the statistic
    (:func:`split_statistic`) under both identity estimates; the anomaly index over classes; flag
    the classes above the threshold, and in each the subgroup the ``poison_group`` rule picks."""
    options = options or ScanOptions()
    inspected, reserve = _matrix(features, "features"), _matrix(clean_features, "clean_features")
    if inspected.shape[1] != reserve.shape[1]:
        raise ValueError(f"features have {inspected.shape[1]} dimensions, clean_features {reserve.shape[1]}")
    labels = _labels(labels, len(inspected), "labels")
    clean_labels = _labels(clean_labels, len(reserve), "clean_labels")
    classes = np.unique(clean_labels)
    if len(classes) < 2:
        raise ValueError(f"the clean reserve must hold at least 2 classes, got {len(classes)}")
    missing = np.setdiff1d(np.unique(labels), classes)
    if len(missing):
        raise ValueError(f"classes {missing.tolist()} of the inspected set are absent from the clean reserve; "
                         "the global model needs every class")
    # sklearn first: it loads scipy's own OpenBLAS, which the limit below must also cover
    import sklearn.decomposition  # noqa: F401
    from threadpoolctl import threadpool_limits

    # One BLAS thread: every matrix here is small (d ≤ reduce_dim after the PCA), and on a shared
    # 2-core machine two OpenBLAS threads made one call at N = M = 500, d = 4096 take 13 s
    # instead of 1 s. The limit is lifted when the call returns.
    with threadpool_limits(limits=1):
        return _scan(inspected, labels, reserve, clean_labels, classes, options, seed)


def _scan(inspected, labels, reserve, clean_labels, classes, options: ScanOptions, seed: int) -> ScanResult:
    rng = np.random.default_rng(seed)
    inspected, reserve, reduction = _reduce(inspected, reserve, options, seed)

    model = global_model(reserve, clean_labels, classes, options.em_max_iterations, options.em_tolerance)
    su, se = model["Su"], model["Se"]
    f = np.linalg.pinv(se)
    union = np.vstack([inspected, reserve])
    union -= union.mean(0)
    union_labels = np.concatenate([labels, clean_labels])
    is_clean = np.r_[np.zeros(len(inspected), bool), np.ones(len(reserve), bool)]

    statistics = {name: np.zeros(len(classes)) for name in IDENTITY_ESTIMATES}
    ones_union = np.zeros(len(union), dtype=bool)
    sizes, poison = {}, {name: np.zeros(len(classes), dtype=np.int64) for name in POISON_GROUP_RULES}
    for position, label in enumerate(classes):
        members = np.flatnonzero(union_labels == label)
        rows = union[members]
        ones, mean_one, mean_zero = find_split(rows, f, rng, options.split_max_steps)
        ones_union[members] = ones
        for name in IDENTITY_ESTIMATES:
            statistics[name][position] = split_statistic(rows, ones, mean_one, mean_zero,
                                                        identity_of(rows, su, se, f, name), f)
        clean_member = is_clean[members]
        counts = {"inspected": [int((~ones & ~clean_member).sum()), int((ones & ~clean_member).sum())],
                  "clean": [int((~ones & clean_member).sum()), int((ones & clean_member).sum())]}
        sizes[int(label)] = counts
        # the cleansers flag subgroup 0 only when it holds strictly fewer clean samples, else subgroup 1
        poison["fewer_clean"][position] = 0 if counts["clean"][0] < counts["clean"][1] else 1
        poison["smaller"][position] = 0 if counts["inspected"][0] < counts["inspected"][1] else 1

    indices = {name: anomaly_index(values, options.anomaly_side) for name, values in statistics.items()}
    threshold = THRESHOLDS[options.threshold]
    index = indices[options.identity_estimate]
    flagged_classes = [int(c) for c, value in zip(classes, index) if value > threshold]
    subgroup = ones_union[:len(inspected)].astype(np.int8)
    in_flagged = np.isin(labels, flagged_classes)
    position_of = np.searchsorted(classes, labels)
    decisions = {name: in_flagged & (subgroup == picks[position_of]) for name, picks in poison.items()}
    # the classes every (identity estimate, threshold) would flag, and which of them the verdict reads
    flagged_by_variant = {f"{name}/{rule}": [int(c) for c, value in zip(classes, values) if value > THRESHOLDS[rule]]
                          for name, values in indices.items() for rule in THRESHOLDS}
    info = {**reduction, "em_iterations": model["iterations"], "em_converged": model["converged"],
            "inspected": len(inspected), "clean_reserve": len(reserve), "threshold_name": options.threshold,
            "identity_estimate": options.identity_estimate, "poison_group": options.poison_group,
            "anomaly_side": options.anomaly_side, "verdict_reads": f"{options.identity_estimate}/{options.threshold}",
            "flagged_by_variant": flagged_by_variant}
    return ScanResult(classes=[int(c) for c in classes], labels=labels, statistic=statistics[options.identity_estimate],
                      anomaly_index=index, threshold=threshold, flagged_classes=flagged_classes,
                      flagged=decisions[options.poison_group], subgroup=subgroup,
                      poison_subgroup=poison[options.poison_group], subgroup_sizes=sizes, decisions=decisions,
                      statistic_by_estimate=statistics, anomaly_index_by_estimate=indices, info=info)


def _run_scan(inputs, options, seed: int):
    return scan(inputs.class_features, inputs.class_labels, inputs.clean_features, inputs.clean_labels, options,
                seed).to_verdict()


SCAN = Detector("scan", "SCAn", "Tang et al., USENIX Security 2021; reference: TDteach/Demon-in-the-Variant "
                "pysrc/SCAn.py", "classes", _run_scan, options=ScanOptions,
                rule=lambda options, protocol: (f"a class is flagged when its anomaly index exceeds "
                                                f"{'e²' if options.threshold == 'e2' else 'e'} (identity estimate "
                                                f"{options.identity_estimate}); inside it, the subgroup holding fewer "
                                                f"clean-reserve samples"))
