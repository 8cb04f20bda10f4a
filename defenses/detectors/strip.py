"""STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC
2019): an input-level, run-time detector that needs the model's outputs, not its representations.

Paper §3: "regardless of strong perturbations on the input image, the predictions of all perturbed
inputs tend to be always consistent, falling into the attacker's targeted class". Each inspected
input is superimposed with N held-out clean images and the Shannon entropy of the model's class
probabilities is averaged over the N blends (§4.4, Eq. 2–4); a trigger that fixes the prediction
whatever else is in the image gives a low entropy. The detection boundary is set on held-out clean
images alone (§5.3): fit a normal distribution to their entropies and take its FRR-quantile
(1%); an input whose entropy is at most the boundary is trojaned (Algorithm 1, "if H ≤ detection
boundary").

The reference is the authors' notebook ``STRIP_CIFAR10DeepArchit_Tb.ipynb`` (garrisongys/STRIP
@6588a38): cell 19 (``superimpose``, ``entropyCal``: N = 100 overlays drawn with replacement,
``cv2.addWeighted(background, 1, overlay, 1, 0)``, ``-nansum(p·log2 p)`` summed over the N blends
and divided by N) and cell 22 (``scipy.stats.norm.fit`` of the clean entropies,
``norm.ppf(0.01, μ, σ)``). docs/detectors/strip.md lists where this implementation departs from it.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from defenses.detectors.detection import Detection
from defenses.detectors.detector import Detector
from utils.params import check_params, param

STRIP_THRESHOLD_RULES = ("normal", "empirical")


@dataclass
class StripOptions:
    """STRIP's parameters (flags ``--strip_<field>`` where the evaluation registers it)."""

    n: int = param(100, "held-out clean images superimposed on each inspected input (reference: notebook cell 19, "
                        "n_sample = 100; paper §5.2, N = 100; §5.4 finds N = 10 enough on GTSRB)", low=1)
    frr: float = param(0.01, "false rejection rate the detection boundary is set for on the held-out clean images "
                             "(reference: notebook cell 22, norm.ppf(0.01, ...); paper §5.3, 'FRR, e.g., 1%')",
                       low=0.0, high=1.0, low_open=True, high_open=True)
    threshold_rule: str = param("normal", "how the boundary is read from the clean entropies: 'normal' = the frr-"
                                          "quantile of a fitted normal (reference: notebook cell 22; paper §5.3); "
                                          "'empirical' = their empirical frr-quantile (backdoor-toolbox "
                                          "cleansers_tool_box/strip.py, which fits no distribution)",
                                choices=STRIP_THRESHOLD_RULES)
    overlay_weight: float = param(1.0, "weight of the superimposed image, blend = input + weight·overlay (reference: "
                                       "cv2.addWeighted(x, 1, overlay, 1, 0), notebook cell 19; the toolbox's "
                                       "strip_alpha, also 1.0 at its call site)", low=0.0, low_open=True)
    clip: bool = param(False, "clip each blend to [0, 1] (reference: no; cv2.addWeighted does not saturate float32 "
                              "images, so the notebook's blends reach 2)")
    batch_images: int = param(4096, "superimposed images per call of predict_proba (ours: bounds memory, 4096 "
                                    "blends of 3×32×32 floats are 50 MB; the result does not depend on it)", low=1)
    # The evaluation (evaluation/detection_inputs.py) reads these two to draw the held-out sets it
    # passes in; strip() itself takes whatever sets it is given.
    overlay_pool: int = param(500, "held-out clean images the overlays are drawn from (ours: 500 of the training "
                                   "set; the reference draws from 9,999, x_train[40000:49999])", low=1)
    fit_samples: int = param(500, "held-out clean images whose entropies fit the boundary (ours: 500, since each "
                                  "costs n forward passes; the reference fits on 2,000, x_train[26000:28000])", low=2)

    def __post_init__(self):
        check_params(self)


def _images(images, name: str) -> torch.Tensor:
    """A float (n, C, H, W) tensor in [0, 1], or a ValueError naming the argument: STRIP's blend is
    a sum of pixel intensities, which normalised tensors or uint8 images would silently change."""
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8 or not tensor.is_floating_point():
        raise ValueError(f"{name} must be float images in [0, 1], got dtype {tensor.dtype} (divide uint8 by 255)")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be a (n, C, H, W) batch of images, got shape {tuple(tensor.shape)}")
    if tensor.numel() and (not torch.isfinite(tensor).all() or tensor.min() < -1e-6 or tensor.max() > 1 + 1e-6):
        raise ValueError(f"{name} must be images in [0, 1] (not mean/std-normalised), got values in "
                         f"[{float(tensor.min()):g}, {float(tensor.max()):g}]")
    return tensor


def _entropies_bits(probabilities, expected_rows: int) -> np.ndarray:
    """Shannon entropy in bits of each row (paper Eq. 2). 0·log 0 counts as 0, as the notebook's
    ``nansum``; rows that are not probabilities (logits passed by mistake) raise."""
    p = torch.as_tensor(probabilities).detach().to("cpu", torch.float64)
    if p.dim() != 2 or len(p) != expected_rows:
        raise ValueError(f"predict_proba must return ({expected_rows}, classes) probabilities, got shape "
                         f"{tuple(p.shape)}")
    # bf16 autocast leaves row sums a few 1e-3 from 1; logits are never this close to a distribution
    if not torch.isfinite(p).all() or p.min() < -1e-6 or (p.sum(1) - 1).abs().max() > 0.05:
        raise ValueError("predict_proba must return class probabilities (non-negative rows summing to 1), "
                         "not logits")
    p = p.clamp_min(0.0)
    return (-torch.special.xlogy(p, p).sum(1) / math.log(2.0)).numpy()


def strip_entropy(predict_proba, images, overlay_images, overlay_indices, overlay_weight: float = 1.0,
                  clip: bool = False, batch_images: int = 4096) -> np.ndarray:
    """H(x) = (1/N) Σₙ H(p(x + w·overlayₙ)) for every image (paper Eq. 2–4), where row i of
    ``overlay_indices`` (n_images, N) names the N overlays of image i. Blends are built on the
    overlays' device and sent to ``predict_proba`` at most ``batch_images`` at a time; an image's
    value does not depend on which others share its batch (up to the model's float arithmetic)."""
    images = torch.as_tensor(images)
    overlays = torch.as_tensor(overlay_images)
    indices = np.asarray(overlay_indices, dtype=np.int64)
    if len(images) == 0:
        return np.zeros(0)
    count = indices.shape[1]
    pair_image = np.repeat(np.arange(len(images)), count)
    pair_overlay = indices.reshape(-1)
    entropies = np.empty(len(pair_image))
    images = images.to(overlays.device, overlays.dtype)
    with torch.no_grad():
        for start in range(0, len(pair_image), batch_images):
            stop = min(start + batch_images, len(pair_image))
            base = images[torch.as_tensor(pair_image[start:stop], device=overlays.device)]
            blend = base + overlay_weight * overlays[torch.as_tensor(pair_overlay[start:stop], device=overlays.device)]
            if clip:
                blend = blend.clamp_(0.0, 1.0)
            entropies[start:stop] = _entropies_bits(predict_proba(blend), stop - start)
    return entropies.reshape(len(images), count).mean(1)


def _normal_boundary(entropies: np.ndarray, frr: float):
    """(μ, σ, boundary): the maximum-likelihood normal of the clean entropies (the population σ, as
    ``scipy.stats.norm.fit``) and its frr-quantile. σ = 0 (every clean entropy equal) leaves the
    boundary at μ, where the quantile of any narrower normal tends."""
    from scipy.stats import norm

    mean, std = float(np.mean(entropies)), float(np.std(entropies))
    boundary = float(norm.ppf(frr, loc=mean, scale=std)) if std > 0 else mean
    return mean, std, boundary


def strip(predict_proba, inputs, overlay_images, fit_images, options: StripOptions = None,
          seed: int = 0, memo: dict = None) -> Detection:
    """STRIP on the pool ``inputs`` (paper Algorithm 1 and §5.3).

    ``predict_proba(images)`` maps a float (n, C, H, W) tensor, here blends with values up to
    1 + overlay_weight unless ``options.clip``, to (n, classes) class probabilities (the caller
    wraps the model: batched, eval mode, no gradients). ``inputs``: the pool's images, benign and
    triggered, float in [0, 1]. ``overlay_images``: held-out clean images, the paper's D_test,
    superimposed on every input and every fit image. ``fit_images``: held-out clean images whose
    entropies set the boundary; they should be disjoint from ``overlay_images`` (the notebook
    fits on x_train[26000:28000] and overlays x_train[40000:49999]), since an image blended with
    itself is only brightened.

    Overlays are drawn independently for every image, uniformly with replacement, as the
    notebook's ``np.random.randint`` per input (the toolbox instead shares N overlays drawn
    without replacement across a batch); a generator seeded by ``seed`` draws them, the fit
    images' from one stream and the inputs' from another, so the pool's overlays do not depend on
    the size of the fit set.

    ``flagged``: entropy ≤ the boundary of ``options.threshold_rule``; ``decisions`` holds both
    rules ('normal', 'empirical'), and ``variants`` each as a detection (:func:`strip_decision`);
    ``scores`` = −entropy (higher = more suspicious), also the oracle's ``threshold_scores``;
    ``info``: the boundary, the fitted μ and σ, the FRR the boundary gives on the fit images
    themselves, whether the normal boundary lies below every entropy, and the counts.

    ``memo``: a dict kept across calls on the same model, overlay and fit images (the evaluation's
    pools): the fit entropies, which depend on nothing else, are computed once and reused.
    """
    options = options if options is not None else StripOptions()
    check_params(options)
    pool = _images(inputs, "inputs")
    overlays = _images(overlay_images, "overlay_images")
    fit = _images(fit_images, "fit_images")
    if len(overlays) == 0:
        raise ValueError("overlay_images is empty: STRIP superimposes held-out clean images")
    if len(fit) < 2:
        raise ValueError(f"fit_images must hold at least 2 clean images to fit a normal, got {len(fit)}")
    if pool.shape[1:] != overlays.shape[1:] or fit.shape[1:] != overlays.shape[1:]:
        raise ValueError(f"inputs {tuple(pool.shape[1:])}, overlay_images {tuple(overlays.shape[1:])} and fit_images "
                         f"{tuple(fit.shape[1:])} must have the same image shape")
    overlays = overlays.float()

    def entropies(images, stream: int) -> np.ndarray:
        indices = np.random.default_rng([seed, stream]).integers(0, len(overlays), size=(len(images), options.n))
        return strip_entropy(predict_proba, images, overlays, indices, options.overlay_weight, options.clip,
                             options.batch_images)

    key = ("strip_fit_entropy", seed, options.n, options.overlay_weight, options.clip, len(fit), len(overlays))
    if memo is not None and key in memo:
        fit_entropy = memo[key]
    else:
        fit_entropy = entropies(fit, 0)
        if memo is not None:
            memo[key] = fit_entropy
    detection = strip_decision(entropies(pool, 1), fit_entropy, options)
    detection.info.update(n_overlay=len(overlays), forward_passes=options.n * (len(fit) + len(pool)))
    return detection


def _below_every_entropy(threshold: float):
    """The row fact of a STRIP detection: whether ``threshold`` lies below the entropy of every
    inspected input (scores = −entropy), so that the rule flags none of them."""
    def facts(detection: Detection) -> dict:
        scores = np.asarray(detection.scores, dtype=np.float64)
        return {"threshold_below_every_entropy": bool(len(scores) == 0 or threshold < float(np.min(-scores)))}
    return facts


def strip_decision(pool_entropy, fit_entropy, options: StripOptions = None) -> Detection:
    """STRIP's decision from the entropies: the inspected inputs' (``pool_entropy``) and the
    held-out clean images' that set the boundary (``fit_entropy``). Both rules are computed, each
    an FRR-quantile of the clean entropies: ``normal``, of the normal fitted to them (the
    reference's), and ``empirical``, of the entropies themselves; an input is flagged when its
    entropy is at most the boundary (Algorithm 1). ``flagged`` follows ``options.threshold_rule``;
    ``variants`` holds each rule as a detection of its own, so that both rules' F1 are recorded.

    ``info["threshold_below_every_entropy"]``: the normal rule's boundary lies below every
    inspected input's entropy, so it flags nothing (a normal fitted to skewed entropies can put its
    1% quantile under the whole clean sample: ``normal_threshold_below_every_fit_entropy``); the
    first is recomputed on every subset of the inputs (:meth:`Detection.subset`), the pools."""
    options = options if options is not None else StripOptions()
    pool_entropy = np.asarray(pool_entropy, dtype=np.float64).reshape(-1)
    fit_entropy = np.asarray(fit_entropy, dtype=np.float64).reshape(-1)
    mean, std, normal_boundary = _normal_boundary(fit_entropy, options.frr)
    empirical_boundary = float(np.quantile(fit_entropy, options.frr))
    boundaries = {"normal": normal_boundary, "empirical": empirical_boundary}
    # Algorithm 1: "if H ≤ detection boundary then trojanedFlag ← Yes"
    decisions = {rule: pool_entropy <= boundary for rule, boundary in boundaries.items()}
    boundary = boundaries[options.threshold_rule]
    scores = -pool_entropy
    below = _below_every_entropy(normal_boundary)
    info = {"threshold": boundary, "threshold_rule": options.threshold_rule, "normal_mean": mean, "normal_std": std,
            "normal_threshold": normal_boundary, "empirical_threshold": empirical_boundary,
            "normal_threshold_below_every_fit_entropy": bool(normal_boundary < float(np.min(fit_entropy))),
            "fit_frr": float(np.mean(fit_entropy <= boundary)), "n": options.n, "frr": options.frr,
            "n_fit": len(fit_entropy), "n_inputs": len(pool_entropy)}
    variants = {rule: Detection(flagged=flags, scores=scores, threshold_scores=[scores], decisions={rule: flags},
                                info={"threshold": boundaries[rule]})
                for rule, flags in decisions.items()}
    detection = Detection(flagged=decisions[options.threshold_rule], scores=scores, threshold_scores=[scores],
                          decisions=decisions, info=info, variants=variants, row_facts=below)
    detection.info.update(below(detection))
    return detection


def strip_rates(flagged, malicious) -> dict:
    """The paper's metrics (§4.3): FRR, the share of benign inputs flagged, and FAR, the share of
    trojaned inputs let through; None where the pool has no input of that kind."""
    flagged, malicious = np.asarray(flagged, dtype=bool), np.asarray(malicious, dtype=bool)
    benign = ~malicious
    return {"frr": float(flagged[benign].mean()) if benign.any() else None,
            "far": float((~flagged[malicious]).mean()) if malicious.any() else None}


def _run_strip(inputs, options, seed: int) -> Detection:
    return strip(inputs.predict_proba, inputs.images, inputs.overlay_images, inputs.fit_images, options, seed,
                 memo=inputs.extra.get("memo"))


STRIP = Detector("strip", "STRIP", "Gao et al., ACSAC 2019", "inputs", _run_strip, options=StripOptions,
                 rule=lambda options, protocol: (f"entropy averaged over N = {options.n} superimposed held-out clean "
                                                 f"images, flagged at or below the {options.frr:g} quantile of the "
                                                 f"held-out clean entropies ({options.threshold_rule} rule)"))
