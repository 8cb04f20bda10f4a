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
"""
import copy
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
    """IBD-PSC on ``images`` (float, [0, 1]); ``flagged`` = PSC ≥ T, ``scores`` = PSC."""
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
    for count in range(start, start + options.n):
        amplified_probabilities = probabilities(amplified(model, count + options.layer_offset, options.scale), images, batch_size)
        psc += amplified_probabilities[torch.arange(len(images)), original].double()
    psc = (psc / options.n).numpy()
    flagged = psc >= options.threshold
    passes += len(images) * (options.n + 1)
    return Detection(flagged=flagged, scores=psc, threshold_scores=[psc], decisions={"threshold": flagged},
                     info={"threshold": options.threshold, "start_layers": start, "probe_reached": reached,
                           "batchnorm_layers": len(batchnorm_layers(model)), "layer_offset": options.layer_offset,
                           "forward_passes": passes, "clean_images": len(clean_images), "training_steps": 0})


def _run(inputs, options, seed: int) -> Detection:
    # the probe's clean images: every held-out clean image the evaluation drew (STRIP's overlay and fit sets)
    images, labels = inputs.every_clean_image()
    return ibd_psc(inputs.model, inputs.images, images, labels, options, inputs.batch_size or 512)


IBD_PSC = Detector("ibd_psc", "IBD-PSC", "Hou et al., ICML 2024", "inputs", _run, options=IbdPscOptions,
                   rule=lambda options, protocol: (f"flagged when the mean probability of its own prediction under "
                                                   f"{options.n} models with their deepest BatchNorm layers ×"
                                                   f"{options.scale:g} is at least {options.threshold:g}"))
