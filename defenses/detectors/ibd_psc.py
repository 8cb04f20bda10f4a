"""IBD-PSC (Hou et al., "IBD-PSC: Input-level Backdoor Detection via Parameter-oriented Scaling
Consistency", ICML 2024): an input-level detector that amplifies the model's BatchNorm parameters.

Its observation: multiplying the weight and bias of the deepest BatchNorm layers by a factor (1.5)
soon wrecks a benign input's prediction, while a poisoned input keeps the target with high
confidence. With M_k the model whose k deepest BatchNorm2d layers are so amplified,

    PSC(x) = (1/n) Σ_{k = s}^{s+n−1} softmax(M_k(x))[ŷ(x)],     ŷ(x) the unamplified prediction,

and x is flagged when PSC(x) ≥ T. The first layer count s is probed on clean images with their
labels: the smallest k whose amplified model errs on more than ξ of them.

Reference: BackdoorBox ``core/defenses/IBD_PSC.py`` (n = 5, ξ = 0.6, T = 0.9, scale 1.5). Two of its
details are not followed, and the record says so: its probe amplifies k layers but its test
k + 1 (``layer_offset`` 1 restores that), and its probe returns nothing when no k reaches ξ (then
s here is the deepest count that exists, ``probe_reached`` False). A k beyond the model's BatchNorm
layers amplifies all of them, as the reference's slice does. The clean images of the probe are the
evaluation's held-out clean training images (STRIP's overlay and fit sets), not test inputs; BackdoorBox scores
only inputs the model classifies as their label or target, where the evaluation's pools already
hold only inputs classified as the target.

The threshold-free score is PSC's log-odds, log PSC − log(1 − PSC), computed from the logits in
float64 (``log_probability``, ``log_complement``): it orders inputs as PSC does in exact arithmetic,
also where PSC itself rounds to 1.0 (or to 0). In a pool of
inputs classified as the target, amplification sends benign ones to the target too (it does so to
most clean inputs of a backdoored model), so both kinds keep their prediction: triggered ones with
logit margins of about 200, benign ones of about 80, and a softmax of either is exactly 1.0 in float32
(above a margin of about 17) and in float64 (about 37). PSC's AUROC is then 0.5 from ties alone. The
reference rounds in the same way; under its protocol (benign inputs of every class, which lose
their prediction) the ties never matter. The rule PSC ≥ T is the reference's, on PSC itself.
"""
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from defenses.detectors.detection import Detection, probabilities
from defenses.detectors.detector import Detector
from utils.params import check_params, param


@dataclass
class IbdPscOptions:
    """IBD-PSC's parameters (flags ``--ibd_psc_<field>``)."""

    n: int = param(5, "amplified models averaged (reference: n = 5)", low=1)
    xi: float = param(0.6, "the probe's clean error rate: the first layer count is the smallest whose amplified "
                           "model errs on more than this (reference: ξ = 0.6)", low=0.0, high=1.0)
    threshold: float = param(0.9, "an input is flagged when its PSC is at least this (reference: T = 0.9)",
                             low=0.0, high=1.0)
    scale: float = param(1.5, "factor on the amplified BatchNorm layers' weight and bias (reference: 1.5)",
                         low=0.0, low_open=True)
    layer_offset: int = param(0, "extra layers amplified at test beyond the probed count (reference code: 1, an "
                                 "off-by-one against its probe; ours: 0)", low=0)

    def __post_init__(self):
        check_params(self)


def batchnorm_layers(model: nn.Module) -> list:
    """The model's BatchNorm2d modules, shallowest first."""
    return [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]


def amplified(model: nn.Module, deepest: int, scale: float) -> nn.Module:
    """A copy of ``model`` (evaluation mode) whose ``deepest`` last BatchNorm2d layers have their
    weight and bias multiplied by ``scale``."""
    copy_ = copy.deepcopy(model).eval()
    layers = batchnorm_layers(copy_)
    with torch.no_grad():
        for layer in layers[max(len(layers) - deepest, 0):]:
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
    return copy_


def logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model``'s logits of float ``images`` (float64, CPU, batched), without gradients."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(images[start:start + batch_size].to(device)).double().cpu()
                          for start in range(0, len(images), batch_size)])


def log_probability(logits_: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """log softmax(logits_)[label] per row."""
    return torch.log_softmax(logits_, 1)[torch.arange(len(logits_)), label]


def log_complement(logits_: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """log(1 − softmax(logits_)[label]) per row = logsumexp of the other logits − logsumexp of all."""
    others = logits_.clone()
    others[torch.arange(len(logits_)), label] = -math.inf
    return torch.logsumexp(others, 1) - torch.logsumexp(logits_, 1)


def psc_log_odds(logits_by_model: list, label: torch.Tensor) -> torch.Tensor:
    """log PSC − log(1 − PSC) per row, PSC = mean over the models of softmax(logits)[label]: each
    mean taken in log space (logsumexp; the 1/n of both cancels), so that neither rounds to 1 or 0."""
    kept = torch.logsumexp(torch.stack([log_probability(z, label) for z in logits_by_model]), 0)
    rest = torch.logsumexp(torch.stack([log_complement(z, label) for z in logits_by_model]), 0)
    return kept - rest


def probe_start(model: nn.Module, clean_images: torch.Tensor, clean_labels: torch.Tensor, options: IbdPscOptions,
                batch_size: int = 512) -> tuple:
    """(s, reached, forward passes): the smallest layer count whose amplified model errs on more than
    ξ of the clean images, searched from 1 up (the deepest count when none does)."""
    layers = len(batchnorm_layers(model))
    passes = 0
    for count in range(1, layers + 1):
        predicted = probabilities(amplified(model, count, options.scale), clean_images, batch_size).argmax(1)
        passes += len(clean_images)
        if float((predicted != torch.as_tensor(clean_labels)).float().mean()) > options.xi:
            return count, True, passes
    return layers, False, passes


def ibd_psc(model: nn.Module, images, clean_images, clean_labels, options: IbdPscOptions = None,
            batch_size: int = 512) -> Detection:
    """IBD-PSC on ``images`` (float, [0, 1]); ``flagged`` = PSC ≥ T, ``scores`` = PSC's log-odds from
    the logits (PSC's order, without its rounding to 1.0: see the module docstring)."""
    options = options if options is not None else IbdPscOptions()
    check_params(options)
    if len(batchnorm_layers(model)) == 0:
        raise ValueError("IBD-PSC amplifies BatchNorm2d layers, and this model has none")
    if len(clean_images) == 0:
        raise ValueError("IBD-PSC probes its first layer count on clean images with their labels, and none were given")
    model = model.eval()
    images = torch.as_tensor(images).float()
    start, reached, passes = probe_start(model, torch.as_tensor(clean_images).float(), clean_labels, options,
                                         batch_size)
    original = probabilities(model, images, batch_size).argmax(1)
    psc = torch.zeros(len(images), dtype=torch.float64)
    amplified_logits = []
    for count in range(start, start + options.n):
        logits_ = logits(amplified(model, count + options.layer_offset, options.scale), images, batch_size)
        psc += torch.softmax(logits_, 1)[torch.arange(len(images)), original]
        amplified_logits.append(logits_)
    psc = (psc / options.n).numpy()
    # log PSC − log(1 − PSC), each a log of a mean over the n models taken in log space: increasing in
    # PSC, so it ranks as PSC would in exact arithmetic, but it keeps apart the inputs whose PSC rounds
    # to 1.0 (a deep amplification gives logit margins of 50–300, where every softmax is 1.0 in float64
    # and AUROC sees only ties), and those whose PSC is below 1e-16
    scores = psc_log_odds(amplified_logits, original).numpy()
    flagged = psc >= options.threshold
    passes += len(images) * (options.n + 1)
    return Detection(flagged=flagged, scores=scores, threshold_scores=[scores], decisions={"threshold": flagged},
                     info={"threshold": options.threshold, "start_layers": start, "probe_reached": reached,
                           "batchnorm_layers": len(batchnorm_layers(model)), "layer_offset": options.layer_offset,
                           "forward_passes": passes, "clean_images": len(clean_images), "training_steps": 0,
                           "score": "log PSC - log(1 - PSC) from the logits in float64 (PSC's order without its "
                                    "rounding)",
                           "psc_at_one": float((psc >= 1.0).mean())})


def _run(inputs, options, seed: int) -> Detection:
    # the probe's clean images: every held-out clean image the evaluation drew (STRIP's overlay and fit sets)
    images, labels = inputs.every_clean_image()
    return ibd_psc(inputs.model, inputs.images, images, labels, options, inputs.batch_size or 512)


IBD_PSC = Detector("ibd_psc", "IBD-PSC", "Hou et al., ICML 2024", "inputs", _run, options=IbdPscOptions,
                   rule=lambda options, protocol: (f"flagged when the mean probability of its own prediction under "
                                                   f"{options.n} models with their deepest BatchNorm layers ×"
                                                   f"{options.scale:g} is at least {options.threshold:g}"))
