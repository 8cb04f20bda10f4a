"""ASSET (Pan et al., "ASSET: Robust Backdoor Data Detection Across a Multiplicity of Deep Learning
Paradigms", USENIX Security 2023): a training-set detector that separates poisoned samples by
offsetting two losses.

A fresh model of the victim's architecture is trained for one epoch, batch by batch, to do two
opposite things: to minimise the variance of its outputs on a small clean *base* set, and to
maximise its cross-entropy on those samples of the (poisoned) training batch that look least like
the base set. Afterwards the clean training samples, which resemble the base set, have losses near
the base set's, and the poisoned ones have high losses; a threshold fitted to the lower half of the
losses separates them. Per batch B of the training set, with a base batch X (the victim's frozen
features φ of both):

1. one Adam step on mean_x Var(f(x)) over X (the variance of the raw logits across classes);
2. a fresh offset network V (φ → 128 → 128 → 1, ReLU, sigmoid) trained 100 iterations, each one
   Adam step on MSE(V(φ(B)), 1) and one on MSE(V(φ(X)), 0), two Adam optimisers of lr 1e-4;
3. the samples of B whose adjusted outlyingness of V(φ(b)) exceeds 2 (Hubert & Vandervieren's
   fences with the medcouple) take one Adam step that *maximises* their cross-entropy against
   their labels as given.

Every training sample is then scored by its cross-entropy under f; the threshold is fitted to the
losses at or below their (lower) median by a one-component Gaussian mixture, and a sample whose loss
reaches it is flagged.

Reference: ``reds-lab/ASSET`` ``ASSET_demo.ipynb`` and ``new_poi_util.py`` @c050590 (CIFAR-10):
one epoch, batch 512, base set 1,000 clean images (100 per class), Adam 1e-4 for f and for V, 100
iterations, outlyingness > 2, ε = 1e-6 (the demo's; the function's default is 1e-3). Differences,
each for a reason:

- the base set is the defender's clean images (defenses/defender.py), 100 per class; the reference
  takes them from the test split;
- φ is the victim's tap at ``level`` (s3 by default: the reference reads its ResNet-18's last
  block's map before pooling), computed once in evaluation mode; the reference recomputes the same
  frozen features at each of its 100 iterations in training mode, where only BatchNorm's batch
  statistics differ (the anchor's "features hoisted": hours on a CPU otherwise);
- the final losses are all computed in evaluation mode; the reference scores its poisoned samples
  before switching to it (in training mode, from all-poisoned batches), which favours itself;
- a batch in which fewer than 2 samples are selected takes no maximising step (the reference's
  cross-entropy over an empty selection is NaN);
- the threshold: the reference computes μ + σ·√(−2 ln(ε)·σ·√(2π)) from the fitted mean μ and
  standard deviation σ, which looks like a slip for the point where the fitted density falls to
  ε, μ + σ·√(−2 ln(ε·σ·√(2π))). The reference's formula is the rule (``--asset_threshold_rule
  reference``); the density's is recorded beside it as a variant, and is the rule with
  ``density``. The mixture's variance carries scikit-learn's regularisation, 1e-6.
"""
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from defenses.detectors.detection import Detection
from defenses.detectors.detector import Detector
from defenses.erasing.train import epoch_batches
from models import LEVELS
from utils.params import check_params, param
from utils.seed import derive_seed, generator

THRESHOLD_RULES = ("reference", "density")


@dataclass
class AssetOptions:
    """ASSET's parameters (flags ``--asset_<field>``)."""

    base_per_class: int = param(100, "clean base images per class, from the defender's clean set (reference: 100, "
                                     "1,000 in all)", low=1)
    epochs: int = param(1, "epochs of the offset training over the training set (reference: 1)", low=1)
    batch_size: int = param(512, "training samples per batch, and base images per step (reference: 512)", low=2)
    lr: float = param(1e-4, "Adam learning rate of the model's two steps (reference: 1e-4)", low=0.0, low_open=True)
    offset_steps: int = param(100, "iterations of the offset network per batch (reference: 100)", low=1)
    offset_hidden: int = param(128, "the offset network's hidden width (reference: 128)", low=1)
    offset_lr: float = param(1e-4, "the offset network's Adam learning rate (reference: 1e-4)", low=0.0,
                             low_open=True)
    outlyingness: float = param(2.0, "samples of a batch whose adjusted outlyingness exceeds this take the "
                                     "maximising step (reference: 2)", low=0.0, low_open=True)
    eps: float = param(1e-6, "the threshold's density ε (reference demo: 1e-6)", low=0.0, high=1.0, low_open=True,
                       high_open=True)
    threshold_rule: str = param("reference", "how the threshold is computed from the fitted Gaussian: 'reference' "
                                             "(its code's formula) or 'density' (where the density falls to ε)",
                                choices=THRESHOLD_RULES)
    level: str = param("s3", "the victim's tap the offset network reads (reference: the last block's map)",
                       choices=LEVELS)

    def __post_init__(self):
        check_params(self)


def medcouple(values) -> float:
    """The medcouple (Brys, Hubert & Struyf 2004), a robust skewness in [−1, 1]: the median over
    every pair x_i ≥ m ≥ x_j (m the median) of ((x_i − m) − (m − x_j)) / (x_i − x_j); pairs of values
    both equal to m (k of them) take sign(i + j − 1 − k), i, j = 1…k. Exact, O(n²)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(ordered)
    if n == 0:
        raise ValueError("the medcouple of no values is undefined")
    centred = ordered - (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    upper, lower = centred[centred >= 0], centred[centred <= 0]
    ties = int((centred == 0).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = (upper[:, None] + lower[None, :]) / (upper[:, None] - lower[None, :])
    both_tied = (upper[:, None] == 0) & (lower[None, :] == 0)
    pairs = [kernel[~both_tied]]
    if ties:
        i, j = np.meshgrid(np.arange(1, ties + 1), np.arange(1, ties + 1))
        pairs.append(np.sign(i + j - 1 - ties).ravel().astype(np.float64))
    return float(np.median(np.concatenate(pairs)))


def adjusted_outlyingness(scores) -> np.ndarray:
    """Each score's adjusted outlyingness, as the reference computes it: its distance from the
    median over the distance from the median to the skew-adjusted fence on its side, the fences
    q1 − 1.5·e^(−4·mc)·IQR and q3 + 1.5·e^(3·mc)·IQR when the medcouple mc > 0, else
    q1 − 1.5·e^(−3·mc)·IQR and q3 + 1.5·e^(4·mc)·IQR."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    median = np.median(scores)
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    iqr, mc = q3 - q1, medcouple(scores)
    low_exponent, high_exponent = (-4.0, 3.0) if mc > 0 else (-3.0, 4.0)
    fence_low, fence_high = q1 - 1.5 * math.exp(low_exponent * mc) * iqr, q3 + 1.5 * math.exp(high_exponent * mc) * iqr
    with np.errstate(divide="ignore", invalid="ignore"):
        above = (scores - median) / (fence_high - median)
        below = (median - scores) / (median - fence_low)
    return np.nan_to_num(np.where(scores > median, above, below), nan=0.0, posinf=np.inf)


def loss_threshold(losses, eps: float = 1e-6) -> dict:
    """{rule: threshold}: a one-component Gaussian fitted to the losses at or below their lower
    median (mean μ, standard deviation σ, variance regularised by 1e-6 as scikit-learn's mixture
    does), then the reference's μ + σ·√(−2 ln(ε)·σ·√(2π)) and the density's μ + σ·√(−2 ln(ε·σ·√(2π)))."""
    losses = np.asarray(losses, dtype=np.float64)
    lower = losses[losses <= np.quantile(losses, 0.5, method="lower")]
    mean, sigma = float(lower.mean()), float(math.sqrt(lower.var() + 1e-6))
    root = math.sqrt(2 * math.pi)
    density = -2 * math.log(eps * sigma * root)
    return {"reference": mean + sigma * math.sqrt(-2 * math.log(eps) * sigma * root),
            "density": mean + sigma * math.sqrt(max(density, 0.0))}


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model``'s architecture with fresh parameters (every module's own
    ``reset_parameters``, drawn on the CPU from ``seed``), on ``model``'s device."""
    device = next(model.parameters()).device
    fresh = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "asset-model"))
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.to(device)


def offset_network(dimension: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dimension, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Sigmoid())


def selected_by_offset(features: torch.Tensor, base_features: torch.Tensor, options: AssetOptions,
                       seed: int) -> np.ndarray:
    """Step 2 of a batch: which rows of ``features`` a fresh offset network, trained to answer 1
    on them and 0 on ``base_features``, scores as outliers (adjusted outlyingness above the bound)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        offset = offset_network(features.shape[1], options.offset_hidden).to(features.device)
    towards_batch = torch.optim.Adam(offset.parameters(), lr=options.offset_lr)
    towards_base = torch.optim.Adam(offset.parameters(), lr=options.offset_lr)
    for _ in range(options.offset_steps):
        for optimizer, rows, answer in ((towards_batch, features, 1.0), (towards_base, base_features, 0.0)):
            predicted = offset(rows)
            loss = F.mse_loss(predicted, torch.full_like(predicted, answer))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        scores = offset(features).squeeze(1).cpu().numpy()
    return adjusted_outlyingness(scores) > options.outlyingness


def asset(model: nn.Module, images, labels, features, base_images, base_features, options: AssetOptions = None,
          seed: int = 0, batch_size: int = 512) -> Detection:
    """ASSET on a training set: ``images`` (float, [0, 1]) with ``labels`` as given and the victim
    ``model``'s ``features`` of them at the options' level; ``base_images`` and ``base_features``
    the clean base set's. A fresh copy of ``model``'s architecture is trained (:func:`reinitialised`);
    ``scores`` = its cross-entropy per sample, ``flagged`` = a loss at or above the rule's threshold."""
    options = options if options is not None else AssetOptions()
    check_params(options)
    images, base_images = torch.as_tensor(images).float(), torch.as_tensor(base_images).float()
    labels = torch.as_tensor(labels).long()
    features, base_features = torch.as_tensor(features).float(), torch.as_tensor(base_features).float()
    if len(base_images) < 2 or len(images) < 2:
        raise ValueError(f"ASSET needs at least 2 training and 2 base images, got {len(images)} and {len(base_images)}")
    device = next(model.parameters()).device
    trained = reinitialised(model, seed).train()
    minimise = torch.optim.Adam(trained.parameters(), lr=options.lr)
    maximise = torch.optim.Adam(trained.parameters(), lr=options.lr)
    order_rng, base_rng = generator(seed, "asset-batches"), generator(seed, "asset-base")
    steps = selected = 0
    for epoch in range(options.epochs):
        for index in epoch_batches(len(images), options.batch_size, order_rng):
            base = torch.randperm(len(base_images), generator=base_rng)[:options.batch_size]
            variance = trained(base_images[base].to(device)).var(dim=1).mean()
            minimise.zero_grad(set_to_none=True)
            variance.backward()
            minimise.step()
            outliers = selected_by_offset(features[index].to(device), base_features[base].to(device), options,
                                          derive_seed(seed, f"asset-offset-{epoch}-{steps}"))
            if outliers.sum() >= 2:  # BatchNorm in training mode needs two rows; the reference's empty CE is NaN
                rows = index[torch.from_numpy(outliers)]
                loss = -F.cross_entropy(trained(images[rows].to(device)), labels[rows].to(device))
                maximise.zero_grad(set_to_none=True)
                loss.backward()
                maximise.step()
                selected += int(outliers.sum())
            steps += 1
    trained.eval()
    with torch.no_grad():
        losses = torch.cat([F.cross_entropy(trained(images[start:start + batch_size].to(device)).float(),
                                            labels[start:start + batch_size].to(device), reduction="none").cpu()
                            for start in range(0, len(images), batch_size)]).numpy()
    thresholds = loss_threshold(losses, options.eps)
    decisions = {rule: losses >= value for rule, value in thresholds.items()}
    return Detection(flagged=decisions[options.threshold_rule], scores=losses, threshold_scores=[losses],
                     decisions=decisions,
                     info={"threshold": thresholds[options.threshold_rule], "thresholds": thresholds,
                           "threshold_rule": options.threshold_rule, "level": options.level,
                           "selected_for_maximising": selected, "clean_images": len(base_images),
                           "forward_passes": len(images) * (options.epochs + 1) + steps * options.batch_size,
                           "training_steps": 2 * steps})


def _run(inputs, options, seed: int) -> Detection:
    return asset(inputs.model, inputs.training_images, inputs.training_labels, inputs.training_features,
                 inputs.base_images, inputs.base_features, options, seed, inputs.batch_size or 512)


ASSET = Detector("asset", "ASSET", "Pan et al., USENIX Security 2023", "training", _run, options=AssetOptions,
                 rule=lambda options, protocol: (f"a training sample is flagged when its loss under the offset-trained "
                                                 f"model reaches the {options.threshold_rule} threshold of a Gaussian "
                                                 f"fitted to the lower half of the losses (ε = {options.eps:g})"))
