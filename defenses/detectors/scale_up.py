"""SCALE-UP (Guo et al., "SCALE-UP: An Efficient Black-box Input-level Backdoor Detection via
Analyzing Scaled Prediction Consistency", ICLR 2023): an input-level detector that needs only the
model's predicted labels.

Its observation: multiplying a poisoned image's pixels by a factor n (and clipping to [0, 1])
keeps the trigger's effect, so the prediction stays the target, while a benign image's prediction
changes as it saturates. The scaled prediction consistency of an input x is

    SPC(x) = (1/|S|) Σ_{n ∈ S} 1[ f(clip(n·x, 0, 1)) = f(x) ]

and an input is flagged when SPC(x) ≥ T. The scaled copies of all inputs are batched together.

References: the authors' ``torch_model_wrapper.py`` and ``test.py`` (JunfengGo/SCALE-UP @a2c6d06)
add U(0, 0.02) noise to every image once, predict at n = 1…11 and score the share of the 11 that
equal n = 1's (n = 1 counted), with no threshold (they report AUROC); BackdoorBox's
``core/defenses/SCALE_UP.py`` uses S = {3, 5, 7, 9, 11}, no noise and T = 0.5 (its ``T`` is only set
when its z-score variant is off; the z-score variant, which needs clean data with ground-truth
labels, is not built). Defaults follow BackdoorBox, which has a rule; ``--scale_up_scales 2 3 4 5 6
7 8 9 10 11 --scale_up_noise 0.02`` scores as the authors' script (whose n = 1 term adds the same
1/11 to every score, which changes no ranking). Images are scaled as [0, 1] pixels, as the
authors' wrapper scales its loaded [0, 1] tensors (the toolbox denormalises first).
"""
from dataclasses import dataclass

import numpy as np
import torch

from defenses.detectors.detection import Detection
from defenses.detectors.detector import Detector
from utils.params import check_params, param
from utils.seed import generator


@dataclass
class ScaleUpOptions:
    """SCALE-UP's parameters (flags ``--scale_up_<field>``)."""

    scales: list = param([3, 5, 7, 9, 11], "pixel-scaling factors n of S (BackdoorBox SCALE_UP.py: 3 5 7 9 11; "
                                           "the authors' script: 1 to 11)", low=1.0, nargs="+", type=float)
    threshold: float = param(0.5, "an input is flagged when its SPC is at least this (BackdoorBox: T = 0.5)",
                             low=0.0, high=1.0)
    noise: float = param(0.0, "uniform noise U(0, noise) added to each image once before scaling (BackdoorBox: "
                              "none; the authors' script: 0.02)", low=0.0)

    def __post_init__(self):
        check_params(self)


def scaled_prediction_consistency(predict_proba, images, scales, noise: float = 0.0, seed: int = 0) -> tuple:
    """(SPC per image, forward passes): the share of ``scales`` at which the predicted class of
    clip(n·x, 0, 1) equals that of x (x with its noise, when ``noise`` > 0)."""
    images = torch.as_tensor(images).float()
    if len(images) == 0:
        return np.zeros(0), 0
    if noise > 0:
        images = images + noise * torch.rand(images.shape, generator=generator(seed, "scale-up-noise"))
    copies = torch.cat([images] + [(scale * images).clamp_(0.0, 1.0) for scale in scales])
    predicted = torch.as_tensor(predict_proba(copies)).argmax(1).reshape(len(scales) + 1, len(images))
    return (predicted[1:] == predicted[0]).double().mean(0).numpy(), len(copies)


def scale_up(predict_proba, images, options: ScaleUpOptions = None, seed: int = 0) -> Detection:
    """SCALE-UP on ``images`` (float, [0, 1]): ``flagged`` = SPC ≥ T; ``scores`` = SPC."""
    options = options if options is not None else ScaleUpOptions()
    check_params(options)
    spc, passes = scaled_prediction_consistency(predict_proba, images, options.scales, options.noise, seed)
    flagged = spc >= options.threshold
    return Detection(flagged=flagged, scores=spc, threshold_scores=[spc], decisions={"threshold": flagged},
                     info={"threshold": options.threshold, "scales": list(options.scales), "noise": options.noise,
                           "forward_passes": passes, "clean_images": 0, "training_steps": 0})


def _run(inputs, options, seed: int) -> Detection:
    return scale_up(inputs.predict_proba, inputs.images, options, seed)


SCALE_UP = Detector("scale_up", "SCALE-UP", "Guo et al., ICLR 2023", "inputs", _run, options=ScaleUpOptions,
                    rule=lambda options, protocol: (f"flagged when the prediction of at least {options.threshold:g} "
                                                    f"of the images scaled by {', '.join(f'{s:g}' for s in options.scales)} "
                                                    f"equals the image's own"))
