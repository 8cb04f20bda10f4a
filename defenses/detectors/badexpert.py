"""BaDExpert (Xie et al., "BaDExpert: Extracting Backdoor Functionality for Accurate Backdoor Input
Detection", ICLR 2024): an input-level detector that fine-tunes two copies of the model on the
defender's clean images.

Its observation: fine-tuning a backdoored model M on clean images with *wrong* labels unlearns the
normal task first, so the copy B (the "backdoor expert") keeps only the backdoor; fine-tuning M on
the same images with their *true* labels at a large learning rate gives M′, which keeps the task and
loses much of the backdoor. For an input x with M's prediction c, let b = B's and m = M′'s softmax
probability of c. A triggered input has b high (the expert still answers c) and m low; a clean input
the reverse. The reference scores the "triangle"

    score(x) = −min(2·m / b, (1 − b) / (0.5 − m))        (denominators clamped at 1e-8)

and flags x when its score exceeds a threshold set for a false-positive rate of 1% on correctly
classified clean inputs.

Reference: the authors' code in backdoor-toolbox, ``other_defenses_tool_box/bad_expert.py`` and
``bad_expert_utils.py`` @9d4d909, with its CIFAR-10 settings:

| what | value | note |
|---|---|---|
| clean images | 2,000 reserved (``clean_images``) | the paper's "5% of the training set"; the paper's own defender (§3.1) holds ≈200 |
| B | labels (y + 1) mod K of the true label, Adam, 1 epoch, batch 128, train mode | lr 1e-4 (ResNet-18), 8e-5 for VGG |
| M′ | true labels, SGD momentum 0.9 Nesterov, weight decay 1e-4, batch 64, 10 epochs, lr ÷ 10 at epochs 2, 4, 6, 8 | lr 0.1 (ResNet-18), 0.2 for VGG |
| augmentation | random crop (padding 4) and horizontal flip, for both | |
| triangle | slope 2, apex 0.5 | tuned for ResNet-18; the reference's VGG-16 constants (2.5, 0.4) are commented out, and are ``--badexpert_slope 2.5 --badexpert_apex 0.4`` |
| threshold | the (1 − fpr) quantile of the scores, fpr 0.01 | |

Where this differs from the reference, and why: the reference sets its threshold on the clean
*test* inputs it is then scored on; here it is set on the defender's fit share (``fit_samples``
clean images held out from the fine-tuning images, those M classifies correctly), never on a
scored input. B's early stop (clean accuracy below 0.2, 0.7 for VGG) is checked once per epoch in
the reference, after its only epoch, so it never acts and is not built. Its learning-rate milestone
for B ([1]) likewise falls after the last epoch. The soft targets of its code are overwritten before
use (dead code) and are not built.
"""
import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.augment import random_crop_flip
from defenses.detectors.detection import Detection, probabilities
from defenses.detectors.detector import Detector
from defenses.erasing.train import epoch_batches
from utils.params import check_params, param
from utils.seed import generator

# the reference's learning rates for B and M′ by architecture (bad_expert_utils.get_params, CIFAR-10)
REFERENCE_LRS = {"vgg": (8e-5, 0.2), "default": (1e-4, 0.1)}


@dataclass
class BadExpertOptions:
    """BaDExpert's parameters (flags ``--badexpert_<field>``)."""

    clean_images: int = param(2000, "clean images B and M′ are fine-tuned on (reference: 2,000 reserved)", low=1)
    fit_samples: int = param(500, "further clean images, held out, whose scores set the threshold (ours: the "
                                  "reference uses the scored test inputs)", low=1)
    fpr: float = param(0.01, "the threshold's false-positive rate on correctly classified clean images "
                             "(reference: 0.01 on CIFAR-10)", low=0.0, high=1.0, high_open=True)
    unlearn_lr: Optional[float] = param(None, "B's Adam learning rate (default: the reference's for the "
                                              "architecture, 8e-5 for VGG, 1e-4 otherwise)", low=0.0, low_open=True,
                                        type=float)
    unlearn_epochs: int = param(1, "B's epochs on the wrongly labelled clean images (reference: 1)", low=1)
    unlearn_batch_size: int = param(128, "B's batch size (reference: 128)", low=2)
    finetune_lr: Optional[float] = param(None, "M′'s initial SGD learning rate (default: the reference's for the "
                                               "architecture, 0.2 for VGG, 0.1 otherwise)", low=0.0, low_open=True,
                                         type=float)
    finetune_epochs: int = param(10, "M′'s epochs (reference: 10)", low=1)
    finetune_batch_size: int = param(64, "M′'s batch size (reference: 64)", low=2)
    milestones: list = param([2, 4, 6, 8], "M′'s epochs at which its lr ÷ 10 (reference: 2 4 6 8)", low=0,
                             nargs="*", type=int)
    slope: float = param(2.0, "the triangle's slope, 2·m/b (reference: 2, tuned for ResNet-18)", low=0.0,
                         low_open=True)
    apex: float = param(0.5, "the triangle's apex, (1 − b)/(apex − m) (reference: 0.5)", low=0.0, low_open=True)

    def __post_init__(self):
        check_params(self)


def reference_lrs(model: nn.Module, options: BadExpertOptions) -> tuple:
    """(B's lr, M′'s lr): the options' where given, else the reference's for the model's family."""
    family = "vgg" if type(model).__name__.lower().startswith("vgg") else "default"
    unlearn, finetune = REFERENCE_LRS[family]
    return (options.unlearn_lr or unlearn, options.finetune_lr or finetune)


def _fine_tune(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer, epochs: int, batch_size: int,
               rng: torch.Generator, lr_at=None) -> int:
    """Train ``model`` in place (train mode, crop-and-flip augmentation) with cross-entropy against
    ``labels``; ``lr_at(epoch)`` sets the learning rate of each epoch. Returns the steps taken."""
    device = next(model.parameters()).device
    model.train()
    steps = 0
    for epoch in range(epochs):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch)
        for index in epoch_batches(len(images), batch_size, rng):
            inputs = random_crop_flip(images[index], rng).to(device, non_blocking=True)
            loss = F.cross_entropy(model(inputs), labels[index].to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return steps


def experts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
            options: BadExpertOptions, seed: int) -> tuple:
    """(B, M′, training steps): the backdoor expert, fine-tuned on ``labels`` shifted to (y + 1) mod K,
    and the auxiliary model, fine-tuned on the true labels; both start from copies of ``model``."""
    unlearn_lr, finetune_lr = reference_lrs(model, options)
    labels = torch.as_tensor(labels).long()
    expert = copy.deepcopy(model)
    steps = _fine_tune(expert, images, (labels + 1) % num_classes, torch.optim.Adam(expert.parameters(), lr=unlearn_lr),
                       options.unlearn_epochs, options.unlearn_batch_size, generator(seed, "badexpert-unlearn"))
    auxiliary = copy.deepcopy(model)
    optimizer = torch.optim.SGD(auxiliary.parameters(), lr=finetune_lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps += _fine_tune(auxiliary, images, labels, optimizer, options.finetune_epochs, options.finetune_batch_size,
                        generator(seed, "badexpert-finetune"),
                        lr_at=lambda epoch: finetune_lr * 0.1 ** sum(epoch >= m for m in options.milestones))
    return expert.eval(), auxiliary.eval(), steps


def triangle(expert_probability, auxiliary_probability, slope: float = 2.0, apex: float = 0.5) -> np.ndarray:
    """The reference's score, −min(slope·m / b, (1 − b) / (apex − m)), denominators clamped at 1e-8
    (b: B's, m: M′'s probability of the original prediction); higher is more suspicious."""
    b = torch.as_tensor(expert_probability, dtype=torch.float64)
    m = torch.as_tensor(auxiliary_probability, dtype=torch.float64)
    return (-torch.minimum(slope * m / b.clamp(min=1e-8), (1 - b) / (apex - m).clamp(min=1e-8))).numpy()


def detect(model: nn.Module, expert: nn.Module, auxiliary: nn.Module, images, fit_images, fit_labels,
           options: BadExpertOptions = None, batch_size: int = 512) -> tuple:
    """(scores of ``images``, threshold, correctly classified fit images): the triangle score of
    each input under ``model``'s prediction, and the threshold, the reference's (1 − fpr) order
    statistic of the scores of the ``fit_images`` that ``model`` classifies as ``fit_labels``."""
    options = options if options is not None else BadExpertOptions()

    def scores_of(batch: torch.Tensor) -> tuple:
        predicted = probabilities(model, batch, batch_size).argmax(1)
        rows = torch.arange(len(batch))
        b = probabilities(expert, batch, batch_size)[rows, predicted]
        m = probabilities(auxiliary, batch, batch_size)[rows, predicted]
        return triangle(b, m, options.slope, options.apex), predicted

    scores, _ = scores_of(torch.as_tensor(images).float())
    fit_scores, fit_predicted = scores_of(torch.as_tensor(fit_images).float())
    correct = np.sort(fit_scores[(fit_predicted == torch.as_tensor(fit_labels)).numpy()])
    if len(correct) == 0:
        raise ValueError("BaDExpert sets its threshold on correctly classified clean images, and the model "
                         "classifies none of the fit images correctly")
    # the reference sorts ascending, takes the element at ⌊(1 − fpr)·n⌋ and flags the scores above it
    threshold = float(correct[min(int((1 - options.fpr) * len(correct)), len(correct) - 1)])
    return scores, threshold, len(correct)


def badexpert(model: nn.Module, images, clean_images, clean_labels, fit_images, fit_labels,
              options: BadExpertOptions = None, seed: int = 0, batch_size: int = 512) -> Detection:
    """BaDExpert on ``images`` (float, [0, 1]): B and M′ fine-tuned on ``clean_images``
    (:func:`experts`), the threshold set on ``fit_images`` (:func:`detect`); ``flagged`` = score
    above it, ``scores`` = the triangle score."""
    options = options if options is not None else BadExpertOptions()
    check_params(options)
    clean_images = torch.as_tensor(clean_images).float()
    if len(clean_images) < 2:
        raise ValueError(f"BaDExpert fine-tunes on clean images, and {len(clean_images)} were given; it needs at least 2")
    model = model.eval()
    num_classes = int(probabilities(model, clean_images[:1], 1).shape[1])
    expert, auxiliary, steps = experts(model, clean_images, clean_labels, num_classes, options, seed)
    scores, threshold, fit_correct = detect(model, expert, auxiliary, images, fit_images, fit_labels, options,
                                            batch_size)
    flagged = scores > threshold
    return Detection(flagged=flagged, scores=scores, threshold_scores=[scores], decisions={"threshold": flagged},
                     info={"threshold": threshold, "threshold_set": "the defender's held-out clean images (fit share), "
                                                                    "correctly classified",
                           "fit_correct": fit_correct, "lrs": list(reference_lrs(model, options)),
                           "forward_passes": 3 * (len(images) + len(fit_images)),
                           "clean_images": len(clean_images) + len(fit_images), "training_steps": steps})


def _run(inputs, options, seed: int) -> Detection:
    return badexpert(inputs.model, inputs.images, inputs.overlay_images, inputs.overlay_labels, inputs.fit_images,
                     inputs.fit_labels, options, seed, inputs.batch_size or 512)


BADEXPERT = Detector("badexpert", "BaDExpert", "Xie et al., ICLR 2024", "inputs", _run, options=BadExpertOptions,
                     rule=lambda options, protocol: (f"flagged when its triangle score (the backdoor expert's and the "
                                                     f"clean fine-tuned copy's confidence in the prediction) exceeds "
                                                     f"the {1 - options.fpr:g} quantile of the defender's held-out "
                                                     f"clean images' scores"))
