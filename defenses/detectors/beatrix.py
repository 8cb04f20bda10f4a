"""Beatrix (Ma et al., "The Beatrix Resurrections: Robust Backdoor Detection via Gram Matrices",
NDSS 2023), as the authors' code computes it: wanlunsec/Beatrix ``defenses/Beatrix/Beatrix.py``
at 685827e, which includes the fix of issue #1 (88423c0, the Gram product that was missing).

Per sample: the Gram matrices of orders p = 1..8 of a feature map F (C channels × H·W positions),
G_p = (F^p)(F^p)ᵀ with F^p elementwise, their upper triangles under the signed p-th root; each
entry is compared with bounds median ± 10·MAD learnt from 30 clean maps of the class the model
predicts; the deviation is the relative overshoot beyond the bounds, summed over entries and
orders. A sample is flagged when its deviation exceeds the 95th percentile of clean deviations
held out in a 5-fold split of the clean maps (``beatrix``).

Per class: KMMD between the spatially mean-pooled maps of a class's flagged and unflagged inputs,
then the MAD anomaly index over classes; a class is infected above e² (``beatrix_class_test``).
"""
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from defenses.detectors.detection import Detection
from defenses.detectors.detector import ClassVerdict, Detector
from utils.errors import ParameterError
from utils.params import check_params, param

REFERENCE = "wanlunsec/Beatrix defenses/Beatrix/Beatrix.py"

# The reference's additive guards, kept as they are: 1e-6 inside |bound + 1e-6| (get_deviations_)
# and beside the MAD of the anomaly index (BEAT_detector._detecting).
BOUND_GUARD = 1e-6
MAD_GUARD = 1e-6
# 1.4826·MAD estimates a normal distribution's standard deviation (the reference's constant)
MAD_TO_STD = 1.4826
# Gram entries held in memory at once while scoring a pool (≈ 128 MB of float64)
CHUNK_ENTRIES = 2 ** 24


@dataclass
class BeatrixOptions:
    """Beatrix's parameters; each default is the reference's (``REFERENCE``), named by its place."""

    max_order: int = param(8, "highest Gram order p; orders 1..p are used (reference: BEAT_detector's "
                           "order_list=np.arange(1, 9))", low=1)
    clean_per_class: int = param(30, "clean maps per class that learn the bounds and the threshold (reference: "
                                 "BEAT_detector's clean_data_perclass = 30 for CIFAR-10 and GTSRB)", low=2)
    mad_factor: float = param(10.0, "bounds are median ± this × MAD of each Gram entry over the clean maps "
                              "(reference: Feature_Correlations.minmax_mad, 10)", low=0.0, low_open=True)
    folds: int = param(5, "folds of the clean maps whose held-out deviations fit the threshold (reference: "
                       "threshold_determine, step = 5)", low=2)
    percentile: float = param(95.0, "a sample is flagged above this percentile of the held-out clean deviations "
                              "(reference: threshold_determine's percentile_95, the one _detecting decides and "
                              "groups by; its percentile_99 is reported beside it)", low=0.0, high=100.0,
                              high_open=True)
    kernel_num: int = param(2, "Gaussian kernels summed in the class test's KMMD (reference: kmmd_dist, "
                            "kernel_num=2)", low=1)
    kernel_mul: float = param(2.0, "ratio between the KMMD kernels' bandwidths (reference: kmmd_dist, "
                              "kernel_mul=2.0)", low=0.0, low_open=True)
    class_threshold: float = param(math.exp(2), "a class is infected when its anomaly index exceeds this (e², "
                                   "BackdoorBench detection_pretrain/beatrix.py; the reference only prints the "
                                   "index)", low=0.0)

    def __post_init__(self):
        check_params(self)
        if self.clean_per_class < self.folds:
            # threshold_determine holds out len // folds maps per fold: none at all below this
            raise ParameterError("clean_per_class", f"must be at least folds ({self.folds}), got "
                                 f"{self.clean_per_class}")


def _raw_gram(maps: torch.Tensor, order: int) -> torch.Tensor:
    """(N, C, ...) maps → (N, C, C): F^p (F^p)ᵀ over the flattened positions, F^p elementwise."""
    powered = maps.reshape(maps.shape[0], maps.shape[1], -1) ** order
    return powered @ powered.transpose(1, 2)


def _signed_root(values: torch.Tensor, order: int) -> torch.Tensor:
    return values if order == 1 else values.sign() * values.abs() ** (1.0 / order)


def gram_features(maps, order: int) -> torch.Tensor:
    """Feature_Correlations.G_p: (N, C, ...) maps → (N, C·(C+1)/2) Gram features of order p.

    F^p elementwise, G = F^p (F^p)ᵀ over the flattened positions, then the signed p-th root
    sign(G)·|G|^(1/p), which brings every order back to the scale of the activations. The
    reference keeps the whole C×C matrix with zeros below the diagonal (``triu``); those zeros
    lie inside every bound and add nothing to a deviation, so only the upper triangle, diagonal
    included, is returned here."""
    gram = _raw_gram(_as_float64(maps), order)
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[1])
    return _signed_root(gram[:, rows, cols], order)


def _as_float64(array) -> torch.Tensor:
    # float64 where the reference computes in float32: F^8 of an activation of 100 is 1e16, and a
    # sum of 64 products of those overflows float32's 3e38 at activations of a few hundred
    return torch.as_tensor(array).detach().to("cpu", torch.float64)


def _lower_median_rows(values: np.ndarray) -> np.ndarray:
    # torch.median, as the reference calls it, returns the lower of the two middle values for an
    # even count (30 clean maps: the 15th smallest), not their mean
    middle = (values.shape[1] - 1) // 2
    return np.partition(values, middle, axis=1)[:, middle]


@dataclass
class _Bounds:
    """Feature_Correlations.get_median_mad + minmax_mad for one order: per Gram entry of the
    C×C matrix, min/max = median ∓ factor·MAD of the rooted Gram features over clean maps; and
    the same bounds carried back through the root (sign(b)·|b|^p), so that a tested map's raw
    Gram entries are compared with them directly: the signed root is increasing, so an entry
    lies outside the bounds after the root exactly when it does before, and the root is taken
    only of the few entries outside. Below the diagonal, where the reference's ``triu`` leaves
    zeros that never deviate, the bounds are ∓inf."""

    low: torch.Tensor
    high: torch.Tensor
    raw_low: torch.Tensor
    raw_high: torch.Tensor

    @classmethod
    def fit(cls, upper_by_entry: np.ndarray, channels: int, order: int, mad_factor: float) -> "_Bounds":
        """``upper_by_entry`` (C(C+1)/2, n): the rooted upper-triangle Gram entries of n clean maps,
        one row per entry (contiguous rows make the medians a fast partition)."""
        median = _lower_median_rows(upper_by_entry)
        mad = _lower_median_rows(np.abs(upper_by_entry - median[:, None]))
        rows, cols = np.triu_indices(channels)
        low = torch.full((channels, channels), -math.inf, dtype=torch.float64)
        high = torch.full((channels, channels), math.inf, dtype=torch.float64)
        low[rows, cols] = torch.from_numpy(median - mad_factor * mad)
        high[rows, cols] = torch.from_numpy(median + mad_factor * mad)
        return cls(low, high, low.sign() * low.abs() ** order, high.sign() * high.abs() ** order)

    def overshoot(self, raw: torch.Tensor, order: int) -> torch.Tensor:
        """Feature_Correlations.get_deviations_ for one order, before its normalisation: per
        sample, Σ relu(min − g)/|min + 1e-6| + relu(g − max)/|max + 1e-6| over the rooted Gram
        entries g. Dividing by the bound makes an overshoot relative to the entry's own scale;
        entries inside the bounds add nothing."""
        outside = (raw < self.raw_low).logical_or_(raw > self.raw_high)
        sample, row, col = outside.nonzero(as_tuple=True)
        rooted = _signed_root(raw[sample, row, col], order)
        low, high = self.low[row, col], self.high[row, col]
        excess = (torch.relu(low - rooted) / (low + BOUND_GUARD).abs()
                  + torch.relu(rooted - high) / (high + BOUND_GUARD).abs())
        return torch.zeros(raw.shape[0], dtype=raw.dtype).index_add_(0, sample, excess)


def _chunks(count: int, channels: int):
    step = max(1, CHUNK_ENTRIES // (channels * channels))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def _class_scores(clean: torch.Tensor, tested: torch.Tensor, options: BeatrixOptions, held_out_too: bool = True):
    """One class: the held-out clean deviations of the folds (threshold_determine; None when not
    ``held_out_too``) and the deviations of the tested maps against bounds from all its clean maps
    (train + get_deviations_), streamed one order at a time and in chunks of tested maps, so that
    at most one order's Gram matrices of a chunk are held."""
    count, channels = clean.shape[0], clean.shape[1]
    rows, cols = torch.triu_indices(channels, channels)
    fold_size = count // options.folds
    # threshold_determine holds out [i·k, (i+1)·k) for k = n // folds: the last n mod folds maps
    # are never held out, and only folds·k deviations form the percentile's sample
    held_out = torch.zeros(options.folds * fold_size, dtype=torch.float64)
    tested_deviation = torch.zeros(tested.shape[0], dtype=torch.float64)
    for order in range(1, options.max_order + 1):
        clean_raw = _raw_gram(clean, order)
        upper_by_entry = np.ascontiguousarray(_signed_root(clean_raw[:, rows, cols], order).numpy().T)
        for fold in range(options.folds if held_out_too else 0):
            held = np.arange(fold * fold_size, (fold + 1) * fold_size)
            bounds = _Bounds.fit(upper_by_entry[:, np.setdiff1d(np.arange(count), held)], channels, order,
                                 options.mad_factor)
            held_out[held] += bounds.overshoot(clean_raw[held], order)
        bounds = _Bounds.fit(upper_by_entry, channels, order, options.mad_factor)
        for part in _chunks(tested.shape[0], channels):
            tested_deviation[part] += bounds.overshoot(_raw_gram(tested[part], order), order)
    # get_deviations_ divides by num_feature = C²/2 (half the full C×C matrix, not the C(C+1)/2
    # entries of its triangle) and by the number of orders
    scale = channels * channels / 2 * options.max_order
    return held_out.numpy() / scale if held_out_too else None, tested_deviation.numpy() / scale


def _digest(array) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


def _remembered_class_scores(clean: torch.Tensor, tested: torch.Tensor, options: BeatrixOptions, memo: dict):
    """:func:`_class_scores` with each tested map's deviation kept in ``memo`` (a dict the caller
    holds) under its class's clean maps and the options: a map's deviation depends on nothing
    else, so a map met again (the same training image in another sample size or in a control)
    is not scored again. None: no memory."""
    if memo is None:
        return _class_scores(clean, tested, options)
    store = memo.setdefault(("beatrix", _digest(clean.numpy()), repr(options)), {"held_out": None, "maps": {}})
    keys = [_digest(row) for row in tested.numpy()]
    new = {}  # each map not scored yet, once (a map twice in ``tested`` is scored once)
    for position, key in enumerate(keys):
        if key not in store["maps"]:
            new.setdefault(key, position)
    missing = list(new.values())
    if store["held_out"] is None or missing:
        held_out, deviations = _class_scores(clean, tested[torch.tensor(missing, dtype=torch.long)], options,
                                             held_out_too=store["held_out"] is None)
        store["held_out"] = store["held_out"] if held_out is None else held_out
        store["maps"].update(zip([keys[position] for position in missing], deviations))
    return store["held_out"], np.array([store["maps"][key] for key in keys], dtype=np.float64)


def _percentile_threshold(held_out: np.ndarray, percentile: float) -> float:
    # threshold_determine: the sorted held-out deviations at index int(n·q), no interpolation
    ordered = np.sort(held_out)
    return float(ordered[int(len(ordered) * (percentile / 100))])


def _as_labels(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels).reshape(-1)


def _check_maps(maps, predicted, clean_maps, clean_labels):
    maps, clean_maps = _as_float64(maps), _as_float64(clean_maps)
    predicted, clean_labels = _as_labels(predicted), _as_labels(clean_labels)
    if maps.ndim < 3 or clean_maps.ndim < 3:
        raise ValueError(f"Beatrix needs feature maps (N, C, H, W), got shapes {tuple(maps.shape)} and "
                         f"{tuple(clean_maps.shape)}")
    if maps.shape[1:] != clean_maps.shape[1:]:
        raise ValueError(f"the maps {tuple(maps.shape[1:])} and the clean maps {tuple(clean_maps.shape[1:])} "
                         f"must have the same shape per sample")
    if len(predicted) != len(maps) or len(clean_labels) != len(clean_maps):
        raise ValueError(f"one class per map: {len(maps)} maps with {len(predicted)} predictions, "
                         f"{len(clean_maps)} clean maps with {len(clean_labels)} labels")
    if not (torch.isfinite(maps).all() and torch.isfinite(clean_maps).all()):
        raise ValueError("the feature maps hold NaN or ±inf")
    return maps, predicted, clean_maps, clean_labels


def beatrix(maps, predicted, clean_maps, clean_labels, options: BeatrixOptions = None, seed: int = 0,
            memo: dict = None) -> Detection:
    """Beatrix's per-sample detection (BEAT_detector._detecting with Feature_Correlations).

    ``maps`` (N, C, H, W): feature maps at one level of the inputs under test (the reference:
    the input of PreActResNet18's layer4, 256×8×8). ``predicted`` (N,): the class the model
    gives each; Beatrix compares an input with the bounds of that class, since at test time the
    defender knows nothing else about it. ``clean_maps``/``clean_labels``: the defender's clean
    set, grouped as the reference groups it, by the model's prediction on each clean image; a
    class keeps ``clean_per_class`` of its clean maps (30), drawn by ``seed`` as the reference
    draws them by shuffling before taking the first 30, and fewer when it has fewer.

    Per predicted class: bounds median ± 10·MAD per Gram entry (orders 1..8) from its clean
    maps; the deviation of each input (``scores``); the threshold, the 95th percentile of the
    clean maps' deviations held out in a 5-fold split (each fold scored against bounds from the
    other four); ``flagged`` = deviation > threshold, the reference's ``ood_label_95``.
    ``decisions`` also holds the 99th percentile's rule, which the reference reports beside it.

    ``memo``: a dict kept between calls on the same clean maps (the evaluation's pools at a level,
    or its class-level samples and their controls), in which each map's deviation is remembered,
    so that a map is scored once (the values are those of a fresh call).
    """
    options = options or BeatrixOptions()
    maps, predicted, clean_maps, clean_labels = _check_maps(maps, predicted, clean_maps, clean_labels)
    rng = np.random.default_rng(seed)
    percentiles = sorted({options.percentile, 95.0, 99.0})
    scores = np.zeros(len(maps))
    flags = {q: np.zeros(len(maps), dtype=bool) for q in percentiles}
    thresholds, clean_counts = {f"{q:g}": {} for q in percentiles}, {}
    for label in np.unique(predicted):
        available = np.flatnonzero(clean_labels == label)
        if len(available) < options.folds:
            raise ValueError(f"class {label} holds {len(available)} clean maps; Beatrix's {options.folds}-fold "
                             f"threshold needs at least {options.folds} (the reference crashes below that, issue #2)")
        chosen = rng.permutation(available)[:options.clean_per_class]
        members = np.flatnonzero(predicted == label)
        held_out, scores[members] = _remembered_class_scores(clean_maps[torch.from_numpy(chosen)],
                                                             maps[torch.from_numpy(members)], options, memo)
        class_thresholds = {q: _percentile_threshold(held_out, q) for q in percentiles}
        for q in percentiles:
            flags[q][members] = scores[members] > class_thresholds[q]
        for q in percentiles:
            thresholds[f"{q:g}"][str(label)] = class_thresholds[q]
        clean_counts[str(label)] = len(chosen)
    decisions = {f"percentile_{q:g}": flags[q] for q in percentiles}
    info = {"thresholds": thresholds[f"{options.percentile:g}"], "thresholds_by_percentile": thresholds,
            "clean_per_class_used": clean_counts,
            "orders": options.max_order, "channels": int(maps.shape[1]),
            "positions": int(np.prod(maps.shape[2:])), "percentile": options.percentile}
    return Detection(flagged=flags[options.percentile], scores=scores, threshold_scores=[scores],
                     decisions=decisions, info=info)


def kmmd(first, second, kernel_num: int = 2, kernel_mul: float = 2.0) -> float:
    """The reference's kmmd_dist: m·n/(m+n) times the biased (V-statistic) MMD² between two sets
    of vectors, with a sum of ``kernel_num`` Gaussian kernels exp(−‖x − y‖²/b_i), bandwidths
    b_i = b·kernel_mul^i for i < kernel_num, b = median squared distance / kernel_mul^(kernel_num // 2),
    the median taken over all (n+m)² pairs of the pooled set, the zero diagonal included (with
    the defaults: b = median/2 and median). The factor m·n/(m+n) makes the statistic grow with
    the sample sizes, as a test statistic does, so that a large separated group stands out.
    Returns 0.0 when the median squared distance is 0 (the reference divides by it: NaN)."""
    from scipy.spatial.distance import cdist

    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    pooled = np.vstack([first, second])
    squared = cdist(pooled, pooled, "sqeuclidean")
    bandwidth = float(_lower_median_rows(squared.reshape(1, -1))[0])
    if bandwidth <= 0:
        return 0.0
    bandwidth /= kernel_mul ** (kernel_num // 2)
    kernel = sum(np.exp(-squared / (bandwidth * kernel_mul ** i)) for i in range(kernel_num))
    n, m = len(first), len(second)
    statistic = kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
    return float(m * n / (m + n) * statistic)


def beatrix_class_test(maps, predicted, clean_maps, clean_labels, options: BeatrixOptions = None, seed: int = 0,
                       detection: Detection = None, memo: dict = None) -> ClassVerdict:
    """Beatrix's class-level test (BEAT_detector._detecting, after the per-sample flags): which
    class is the backdoor's target.

    For every class the model predicts: split its inputs by the per-sample rule at the 95th
    percentile (``ood_label_95``), mean-pool each map over its positions (C values), and take
    J = KMMD(unflagged, flagged) (``kmmd``; J = 0 when nothing is flagged, as the reference).
    Then the anomaly index over classes J* = |J − median J| / 1.4826 / (MAD + 1e-6), and a class
    is infected when J* > e² (``class_threshold``). The KMMD compares pooled channel means, not
    Gram features: it confirms a class only when its flagged inputs also differ in those means.

    ``detection``: the result of :func:`beatrix` on the same arguments, to reuse it; computed
    otherwise (``memo`` as :func:`beatrix`'s). The verdict's ``statistic`` is J* per class, ``flagged`` the per-sample flags that
    fall in infected classes, ``info`` holds J and the group sizes. Classes need inputs in
    ``predicted`` to be tested: give the test inputs of every class, as the reference does
    (its clean test images of each class, plus the triggered ones in the target class).
    """
    options = options or BeatrixOptions()
    if detection is None:
        detection = beatrix(maps, predicted, clean_maps, clean_labels, options, seed, memo)
    sample_flags = detection.decisions["percentile_95"]
    pooled = _as_float64(maps)
    pooled = pooled.reshape(pooled.shape[0], pooled.shape[1], -1).mean(dim=2).numpy()
    predicted = _as_labels(predicted)
    labels = [int(label) for label in np.unique(predicted)]
    statistics, group_sizes = [], {}
    for label in labels:
        members = predicted == label
        unflagged, flagged = pooled[members & ~sample_flags], pooled[members & sample_flags]
        group_sizes[str(label)] = [len(unflagged), len(flagged)]
        # an empty group has no split to measure: the reference sets J = 0 for an empty flagged
        # group and would return NaN for an empty unflagged one, which poisons the median
        empty = len(flagged) == 0 or len(unflagged) == 0
        statistics.append(0.0 if empty else kmmd(unflagged, flagged, options.kernel_num, options.kernel_mul))
    statistics = np.asarray(statistics)
    median = np.median(statistics)
    mad = np.median(np.abs(statistics - median))
    index = np.abs(statistics - median) / MAD_TO_STD / (mad + MAD_GUARD)
    infected = [label for label, value in zip(labels, index) if value > options.class_threshold]
    return ClassVerdict(statistic=dict(zip(labels, index.tolist())), flagged_classes=infected,
                        flagged=sample_flags & np.isin(predicted, infected), threshold=options.class_threshold,
                        info={"kmmd": {str(k): float(v) for k, v in zip(labels, statistics)},
                              "group_sizes_unflagged_flagged": group_sizes})


def _run(inputs, options, seed: int) -> Detection:
    return beatrix(inputs.maps, inputs.predicted, inputs.clean_maps, inputs.clean_labels, options, seed,
                   inputs.extra.get("memo"))


def _rule(options, protocol) -> str:
    options = options or BeatrixOptions()
    return (f"Gram orders 1–{options.max_order} beyond median ± {options.mad_factor:g}·MAD of "
            f"{options.clean_per_class} clean maps of the predicted class, deviation above the "
            f"{options.percentile:g}th percentile of {options.folds}-fold held-out clean deviations")


def _run_class_test(inputs, options, seed: int) -> ClassVerdict:
    """The class test on what a class-level detector is handed: the inspected training sample,
    grouped by its labels, against the clean reserve (both reshaped to the level's maps)."""
    def as_maps(features):
        return np.asarray(features).reshape(len(features), *inputs.map_shape)
    return beatrix_class_test(as_maps(inputs.class_features), inputs.class_labels, as_maps(inputs.clean_features),
                              inputs.clean_labels, options, seed, memo=inputs.extra.get("memo"))


def _class_rule(options, protocol) -> str:
    options = options or BeatrixOptions()
    return (f"a class whose KMMD between its per-sample-flagged and unflagged inputs has an anomaly index "
            f"above {options.class_threshold:.3g} (e²)")


# Registered by one line each in defenses/__init__.py: register_detector(beatrix.BEATRIX), (beatrix.BEATRIX_CLASS)
BEATRIX = Detector("beatrix", "Beatrix", "Ma et al., NDSS 2023; " + REFERENCE, "maps", _run, options=BeatrixOptions,
                   rule=_rule)
BEATRIX_CLASS = Detector("beatrix_class", "Beatrix class test", "Ma et al., NDSS 2023; " + REFERENCE
                         + " (BEAT_detector._detecting)", "classes", _run_class_test, options=BeatrixOptions,
                         rule=_class_rule)
