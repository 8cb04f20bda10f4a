"""IBD-PSC (Hou et al., ICML 2024) on a model whose answers are known: amplifying its BatchNorm
moves a benign image's prediction and leaves a triggered one's confidently on the target."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from defenses import DETECTORS
from defenses.detectors.ibd_psc import IbdPscOptions, amplified, batchnorm_layers, ibd_psc, probe_start, psc_log_odds
from metrics.auroc import auroc


class Toy(nn.Module):
    """One BatchNorm (identity as trained) before a linear read of each channel's mean: class 0
    (the target) reads channel 0, where the trigger is; class 1 is a bias; class 2 reads channel 1,
    so scaling the features up turns a benign image from class 1 to class 2."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3, eps=0.0)
        self.linear = nn.Linear(3, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[200.0, 0, 0], [0, 0, 0], [0, 10.0, 0]]))
            self.linear.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
        self.eval()

    def forward(self, x):
        return self.linear(torch.relu(self.bn(x)).mean(dim=(2, 3)))


def benign(count: int, seed: int) -> torch.Tensor:
    images = torch.zeros(count, 3, 32, 32)
    images[:, 1] = 0.06 + 0.02 * torch.rand(count, 1, 1, generator=torch.Generator().manual_seed(seed))
    return images


def triggered(count: int, seed: int) -> torch.Tensor:
    images = benign(count, seed)
    images[:, 0, :8, :8] = 1.0
    return images


def test_amplifying_scales_the_deepest_batchnorm_layers_only():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    copy_ = amplified(model, 1, 1.5)
    first, last = batchnorm_layers(copy_)
    assert torch.equal(first.weight, batchnorm_layers(model)[0].weight)
    assert torch.equal(last.weight, 1.5 * batchnorm_layers(model)[1].weight)
    assert torch.equal(batchnorm_layers(amplified(model, 9, 2.0))[0].weight, 2 * batchnorm_layers(model)[0].weight)


def test_ibd_psc_finds_a_planted_population_and_flags_no_clean_one():
    model = Toy()
    clean, labels = benign(50, 1), torch.ones(50, dtype=torch.long)
    assert probe_start(model, clean, labels, IbdPscOptions())[:2] == (1, True)  # ×1.5 turns every one to class 2
    images = torch.cat([benign(30, 2), triggered(15, 3)])
    malicious = np.r_[np.zeros(30, bool), np.ones(15, bool)]
    detection = ibd_psc(model, images, clean, labels)
    assert detection.own_f1(malicious) == 1.0 and auroc(detection.scores, malicious) == 1.0
    assert detection.info["forward_passes"] == 50 + 45 * 6 and detection.info["clean_images"] == 50
    assert not ibd_psc(model, benign(40, 4), clean, labels).flagged.any()


def test_a_probe_that_never_reaches_xi_amplifies_every_layer_and_says_so():
    model = Toy()
    clean = benign(10, 5)
    start, reached, _ = probe_start(model, clean, model(clean).argmax(1), IbdPscOptions(scale=1.0))
    assert (start, reached) == (1, False) and DETECTORS["ibd_psc"].display == "IBD-PSC"


def test_inputs_whose_psc_rounds_to_one_are_still_ranked_by_their_margin():
    """Two populations that both keep the target under amplification, with logit margins of about 55
    and 75: PSC is exactly 1.0 for every one of them (a softmax saturates above a margin of ~17 in
    float32, ~37 in float64), so PSC's AUROC would be 0.5 from ties; PSC's log-odds from the logits
    keeps the larger margins apart."""
    model = Toy()
    clean, labels = benign(50, 1), torch.ones(50, dtype=torch.long)
    weak, strong = triggered(20, 6), triggered(20, 7)
    # channel 0's mean 3/16 and 1/4: target logits 37.5 and 50, ×1.5 once the BatchNorm is amplified
    weak[:, 0, :16, :16], strong[:, 0, :16, :16] = 0.75, 1.0
    images = torch.cat([weak, strong])
    stronger = np.r_[np.zeros(20, bool), np.ones(20, bool)]
    detection = ibd_psc(model, images, clean, labels)
    assert detection.info["psc_at_one"] == 1.0 and detection.flagged.all()  # every PSC is 1.0: the rule flags all
    assert auroc(detection.scores, stronger) == 1.0
    # the score is PSC's log-odds, each mean over the 5 models taken in log space
    with torch.no_grad():
        amplified_logits = torch.stack([amplified(model, k, 1.5)(weak[:1]).double()[0] for k in range(1, 6)])
    rest = torch.logsumexp(amplified_logits[:, 1:], 1) - torch.logsumexp(amplified_logits, 1)
    kept = torch.log_softmax(amplified_logits, 1)[:, 0]
    assert np.isclose(detection.scores[0], float(torch.logsumexp(kept, 0) - torch.logsumexp(rest, 0)), rtol=1e-9)
    # and where PSC is below 1e-16, so that 1 − PSC rounds to 1: the log-odds still order the rows
    low = psc_log_odds([torch.tensor([[0.0, 40.0, 0.0], [0.0, 80.0, 0.0]], dtype=torch.float64)] * 2,
                       torch.tensor([0, 0]))
    assert low.tolist() == pytest.approx([-40.0, -80.0], abs=1e-9)
