"""BaDExpert (Xie et al., ICLR 2024): the triangle score against its formula, the threshold rule on
planted experts whose answers are known, and the two fine-tunings on a task a linear read learns."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from defenses import DETECTORS
from defenses.detectors.badexpert import BadExpertOptions, badexpert, detect, experts, reference_lrs, triangle
from metrics.auroc import auroc

CLASSES = 3


class ChannelRead(nn.Module):
    """Class scores = a linear read of each channel's maximum: class k is the image whose channel k
    is bright (a maximum survives a zero-padded crop and a flip)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor = None):
        super().__init__()
        self.linear = nn.Linear(CLASSES, CLASSES)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(torch.zeros(CLASSES) if bias is None else bias)

    def forward(self, x):
        return self.linear(x.amax(dim=(2, 3)))


class Fixed(nn.Module):
    """Class probabilities given per input kind: a triggered input (bright pixel (0, 0) of channel
    0 over a dark channel 0) gets ``on_trigger``, any other image its class's row of ``on_clean``."""

    def __init__(self, on_trigger: list, on_clean: torch.Tensor):
        super().__init__()
        self.register_buffer("on_trigger", torch.log(torch.tensor(on_trigger)))
        self.register_buffer("on_clean", torch.log(on_clean))
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        is_triggered = (x[:, 0, 0, 0] > 0.9) & (x[:, 0, 1:, 1:].amax(dim=(1, 2)) < 0.5)
        clean_class = x[:, :, 1:, 1:].amax(dim=(2, 3)).argmax(1)
        return torch.where(is_triggered[:, None], self.on_trigger.expand(len(x), -1), self.on_clean[clean_class])


def images_of(labels: torch.Tensor, triggered: bool = False) -> torch.Tensor:
    images = torch.zeros(len(labels), CLASSES, 6, 6)
    images[torch.arange(len(labels)), labels] = 0.8
    if triggered:
        images[:, 0, 0, 0] = 1.0
    return images


def test_the_triangle_is_the_references_formula():
    b, m = np.array([0.9, 0.2, 0.5, 0.1]), np.array([0.1, 0.9, 0.6, 0.05])
    expected = [-min(2 * mi / bi, (1 - bi) / max(0.5 - mi, 1e-8)) for bi, mi in zip(b, m)]
    assert np.allclose(triangle(b, m), expected)
    assert triangle([0.9], [0.1])[0] > triangle([0.2], [0.9])[0]  # the expert sure, the clean copy not: suspicious
    assert np.isclose(triangle([0.5], [0.2], slope=2.5, apex=0.4)[0], -min(2.5 * 0.2 / 0.5, 0.5 / 0.2))


def test_planted_experts_flag_the_triggered_inputs_and_the_threshold_is_the_references_order_statistic():
    # M: the channel read plus the backdoor (a triggered image of class 1 or 2 goes to class 0)
    model = Fixed([0.98, 0.01, 0.01], torch.full((CLASSES, CLASSES), 0.05).fill_diagonal_(0.9))
    expert = Fixed([0.95, 0.025, 0.025], torch.full((CLASSES, CLASSES), 0.45).fill_diagonal_(0.1))   # kept only the backdoor
    auxiliary = Fixed([0.1, 0.45, 0.45], torch.full((CLASSES, CLASSES), 0.05).fill_diagonal_(0.9))   # kept only the task
    labels = torch.arange(60) % CLASSES
    fit_labels = torch.arange(100) % CLASSES
    images = torch.cat([images_of(labels), images_of(1 + torch.arange(30) % 2, triggered=True)])
    malicious = np.r_[np.zeros(60, bool), np.ones(30, bool)]
    scores, threshold, correct = detect(model, expert, auxiliary, images, images_of(fit_labels), fit_labels)
    clean_score = triangle([0.1], [0.9])[0]
    assert correct == 100 and threshold == pytest.approx(clean_score)  # every fit score equal: the 99th is it
    assert ((scores > threshold) == malicious).all() and auroc(scores, malicious) == 1.0
    # fit labels the model gets wrong are left out of the threshold's set
    mislabelled = torch.where(torch.arange(100) < 40, (fit_labels + 1) % CLASSES, fit_labels)
    assert detect(model, expert, auxiliary, images, images_of(fit_labels), mislabelled)[2] == 60


def test_no_correctly_classified_fit_image_is_refused_with_a_message():
    model = Fixed([0.98, 0.01, 0.01], torch.full((CLASSES, CLASSES), 0.05).fill_diagonal_(0.9))
    labels = torch.arange(9) % CLASSES
    with pytest.raises(ValueError, match="correctly classified clean images"):
        detect(model, model, model, images_of(labels), images_of(labels), (labels + 1) % CLASSES)


def test_the_expert_learns_the_shifted_labels_and_the_auxiliary_the_true_ones():
    model = ChannelRead(torch.eye(CLASSES) * 5)
    labels = torch.arange(120) % CLASSES
    options = BadExpertOptions(unlearn_lr=0.05, unlearn_epochs=30, unlearn_batch_size=32, finetune_lr=0.05,
                               finetune_epochs=5, finetune_batch_size=32, milestones=[])
    expert, auxiliary, steps = experts(model, images_of(labels), labels, CLASSES, options, seed=0)
    assert steps == 30 * 4 + 5 * 4
    assert (expert(images_of(labels)).argmax(1) == (labels + 1) % CLASSES).all()
    assert (auxiliary(images_of(labels)).argmax(1) == labels).all()
    assert torch.equal(model.linear.weight, torch.eye(CLASSES) * 5)  # the model itself is untouched


def test_the_reference_learning_rates_follow_the_architecture():
    import models

    vgg = models.build("vgg11", num_classes=10, width=0.125)
    resnet = models.build("preactresnet18", num_classes=10, width=0.125)
    assert reference_lrs(vgg, BadExpertOptions()) == (8e-5, 0.2)
    assert reference_lrs(resnet, BadExpertOptions()) == (1e-4, 0.1)
    assert reference_lrs(vgg, BadExpertOptions(unlearn_lr=1e-3, finetune_lr=0.05)) == (1e-3, 0.05)


def test_badexpert_end_to_end_records_its_inputs():
    model = ChannelRead(torch.eye(CLASSES) * 5)
    labels = torch.arange(30) % CLASSES
    options = BadExpertOptions(finetune_epochs=1, milestones=[])
    detection = badexpert(model, images_of(labels[:12]), images_of(labels), labels, images_of(labels), labels, options)
    assert detection.info["training_steps"] == 1 + 1 and detection.info["clean_images"] == 60
    assert detection.info["forward_passes"] == 3 * (12 + 30) and DETECTORS["badexpert"].display == "BaDExpert"
    with pytest.raises(ValueError, match="at least 2"):
        badexpert(model, images_of(labels), images_of(labels[:1]), labels[:1], images_of(labels), labels)
