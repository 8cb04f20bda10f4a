"""TED (Mo et al., "Robust Backdoor Detection for Deep Learning via Topological Evolution
Dynamics", IEEE S&P 2024): an input-level detector that follows an input through every layer.

At each layer, an input's representation is compared with those of a set of clean images the model
classifies correctly (the defense set): the feature is the rank, among the defense images sorted by
Euclidean distance, of the nearest one the model assigns the input's own predicted class. A benign
input finds its class among its first neighbours at every layer; a triggered one starts among its
true class's images and only joins the target's late, so its sequence of ranks (its trajectory)
is an outlier. A PCA outlier detector is fitted on the defense set's trajectories (each defense
image skipping itself) and scores the inputs.

Reference: ``TED.ipynb`` (tedbackdoordefense/ted @fa193a6): hooks on every non-1×1 convolution,
every ReLU module and every linear layer; ranks as above; ``pyod.models.pca.PCA(contamination=0.01,
n_components='mle')`` with pyod's defaults (standardised inputs, weighted components). Here:

- the layers are the model's own declaration (``model.stages``: every convolution's ReLU and the
  logits for VGG, the stem, every residual block and the logits for the ResNets), so every
  architecture runs it; ``layers="taps"`` restricts it to s1, s2, s3, which separates "more layers"
  from "TED's statistic";
- pyod's scoring is computed directly (sklearn's PCA, no pyod dependency): standardise with the
  defense set's mean and standard deviation, score Σ_j ‖z − c_j‖ / r_j over the principal directions
  c_j with explained-variance ratios r_j, flag above the (1 − contamination) quantile of the defense
  scores (pyod's ``decision_function``, ``threshold_`` and ``predict``);
- the defense set is the evaluation's held-out clean training images (not test inputs) that the
  model classifies correctly, and the record says how many; the reference moves everything to CUDA,
  here the model's own device is used.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from defenses.detectors.detection import Detection
from defenses.detectors.detector import Detector
from utils.params import check_params, param

LAYER_SETS = ("stages", "taps")


@dataclass
class TedOptions:
    """TED's parameters (flags ``--ted_<field>``)."""

    layers: str = param("stages", "the layers ranked: stages = every one the model declares (its convolutions' "
                                  "outputs and the logits, as the reference hooks), taps = s1, s2, s3 only. The "
                                  "other set is always recorded too, as a variant", choices=LAYER_SETS)
    contamination: float = param(0.01, "share of the defense set's trajectories above the threshold (reference: "
                                       "pyod PCA contamination = 0.01)", low=0.0, high=0.5, low_open=True)
    defense_samples: int = param(1000, "clean held-out images the defense set is drawn from, those the model "
                                       "classifies correctly kept (reference: about 1,000)", low=10)

    def __post_init__(self):
        check_params(self)


def layer_names(model: nn.Module, which: str) -> list:
    """The module names TED ranks at: ``model.stages`` or the s1–s3 taps."""
    if which == "taps":
        return [model.taps[level] for level in ("s1", "s2", "s3")]
    if not hasattr(model, "stages"):
        raise ValueError(f"{type(model).__name__} declares no stages (the layers TED follows); declare them as "
                         f"its taps are declared")
    return list(model.stages)


def layer_features(model: nn.Module, images: torch.Tensor, names: list, batch_size: int = 512) -> tuple:
    """({name: (n, d) float32 features on the CPU}, (n,) predictions) in one pass per batch."""
    device = next(model.parameters()).device
    recorded, handles = {}, []
    for name in names:
        handles.append(model.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: recorded.__setitem__(name, output.detach().flatten(1).float())))
    features, predictions = {name: [] for name in names}, []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                logits = model(images[start:start + batch_size].to(device))
                predictions.append(logits.argmax(1).cpu())
                for name in names:
                    features[name].append(recorded[name].cpu())
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in features.items()}, torch.cat(predictions)


def neighbour_ranks(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                    skip_self: bool = False, chunk: int = 256) -> np.ndarray:
    """For each query, the 0-based rank among ``bank`` (sorted by Euclidean distance) of the nearest
    bank row whose label equals the query's; ``skip_self``: the queries are the bank's rows, each one
    leaving itself out. ``len(bank)`` when no bank row has the label."""
    ranks = np.empty(len(queries), dtype=np.int64)
    bank = bank.double()
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start:start + chunk].double(), bank)
        if skip_self:
            rows = torch.arange(start, min(start + chunk, len(queries)))
            distances[rows - start, rows] = float("inf")
        order = distances.argsort(dim=1, stable=True)
        same = bank_labels[order] == query_labels[start:start + chunk, None]
        if skip_self:
            same[:, -1] = same[:, -1] & (order[:, -1] != torch.arange(start, start + len(order)))
        found = same.any(dim=1)
        first = same.double().argmax(dim=1)
        ranks[start:start + len(order)] = torch.where(found, first, torch.full_like(first, bank.shape[0])).numpy()
    return ranks


def pca_outlier_scores(fit: np.ndarray, queries: np.ndarray) -> tuple:
    """(fit scores, query scores) of pyod's PCA detector with its defaults and n_components='mle':
    standardise by the fit set, then Σ_j ‖z − c_j‖ / r_j over the components c_j of sklearn's PCA and
    their explained-variance ratios r_j."""
    from scipy.spatial.distance import cdist
    from sklearn.decomposition import PCA

    mean, std = fit.mean(0), fit.std(0)
    if not (std > 0).any():
        # every defense trajectory is the same (each clean image finds its class first at every layer):
        # PCA has no direction, and any departure from that trajectory is the outlier
        return np.zeros(len(fit)), np.abs(queries - mean).sum(1)
    std = np.where(std > 0, std, 1.0)
    fit_z, query_z = (fit - mean) / std, (queries - mean) / std
    pca = PCA(n_components="mle" if len(fit) >= fit.shape[1] else None).fit(fit_z)
    keep = pca.explained_variance_ratio_ > 0
    components, ratios = pca.components_[keep], pca.explained_variance_ratio_[keep]
    score = lambda z: (cdist(z, components) / ratios).sum(1)  # noqa: E731
    return score(fit_z), score(query_z)


def trajectories(model: nn.Module, images, defense_images, defense_labels, names: list, batch_size: int = 512) -> tuple:
    """(input trajectories (n, L), defense trajectories (m, L), defense size, passes) at the layers ``names``."""
    defense_features, defense_predicted = layer_features(model, torch.as_tensor(defense_images).float(), names,
                                                         batch_size)
    correct = defense_predicted == torch.as_tensor(defense_labels)
    input_features, input_predicted = layer_features(model, torch.as_tensor(images).float(), names, batch_size)
    bank_labels = defense_predicted[correct]
    inputs = np.stack([neighbour_ranks(input_features[name], input_predicted, defense_features[name][correct],
                                       bank_labels) for name in names], axis=1)
    defense = np.stack([neighbour_ranks(defense_features[name][correct], bank_labels, defense_features[name][correct],
                                        bank_labels, skip_self=True) for name in names], axis=1)
    return inputs, defense, int(correct.sum()), len(defense_images) + len(images)


def ted_decision(input_trajectories: np.ndarray, defense_trajectories: np.ndarray, contamination: float) -> tuple:
    """(flagged, scores, threshold): pyod's PCA fitted on the defense trajectories, an input flagged
    above the (1 − contamination) quantile of the defense scores."""
    fit_scores, scores = pca_outlier_scores(defense_trajectories.astype(np.float64),
                                            input_trajectories.astype(np.float64))
    threshold = float(np.percentile(fit_scores, 100 * (1 - contamination)))
    return scores > threshold, scores, threshold


def ted(model: nn.Module, images, defense_images, defense_labels, options: TedOptions = None,
        batch_size: int = 512) -> Detection:
    """TED on ``images`` (float, [0, 1]) with its ``options.layers`` (the other layer set as a variant)."""
    options = options if options is not None else TedOptions()
    check_params(options)
    results = {}
    for which in LAYER_SETS:
        names = layer_names(model, which)
        inputs, defense, kept, passes = trajectories(model, images, defense_images, defense_labels, names, batch_size)
        if kept < 3:  # no defense set to fit: nothing flagged, and the record says why
            flagged, scores, threshold = np.zeros(len(inputs), bool), np.zeros(len(inputs)), None
        else:
            flagged, scores, threshold = ted_decision(inputs, defense, options.contamination)
        results[which] = Detection(flagged=flagged, scores=scores, threshold_scores=[scores],
                                   decisions={which: flagged},
                                   info={"threshold": threshold, "layers": names, "defense_set": kept,
                                         "forward_passes": passes})
    chosen = results[options.layers]
    other = [which for which in LAYER_SETS if which != options.layers][0]
    return Detection(flagged=chosen.flagged, scores=chosen.scores, threshold_scores=[chosen.scores],
                     decisions={which: result.flagged for which, result in results.items()},
                     variants=results,
                     info={**chosen.info, "layer_set": options.layers, "clean_images": len(defense_images),
                           "training_steps": 0, f"{other}_threshold": results[other].info["threshold"],
                           f"{other}_layers": results[other].info["layers"]})


def _run(inputs, options, seed: int) -> Detection:
    options = options if options is not None else TedOptions()
    images, labels = inputs.every_clean_image()
    count = min(options.defense_samples, len(images))
    return ted(inputs.model, inputs.images, images[:count], labels[:count], options, inputs.batch_size or 512)


TED = Detector("ted", "TED", "Mo et al., IEEE S&P 2024", "inputs", _run, options=TedOptions, latent=True,
               rule=lambda options, protocol: (f"nearest-same-class ranks at every {'declared layer' if options.layers == 'stages' else 'tap'}"
                                               f", flagged above the {1 - options.contamination:g} quantile of "
                                               f"the clean defense set's PCA outlier scores"))
