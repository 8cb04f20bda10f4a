"""TED (Mo et al., IEEE S&P 2024) on a network whose answers are known: a triggered input sits among
its true class until the last layer sends it to the target, so its rank trajectory is an outlier;
pyod's PCA scoring computed directly; every model declares the layers TED follows."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import models
from defenses.detectors.ted import TedOptions, neighbour_ranks, pca_outlier_scores, ted
from metrics.auroc import auroc

CLASSES, SHAPE = 4, (3, 4, 4)


class Logits(nn.Module):
    """Class scores = −distance to each class's prototype; a bright first pixel (the trigger) wins class 0."""

    def __init__(self, prototypes: torch.Tensor):
        super().__init__()
        self.register_buffer("prototypes", prototypes)
        self.unused = nn.Parameter(torch.zeros(1))  # a device to read

    def forward(self, x):
        scores = -torch.cdist(x, self.prototypes)
        return torch.where((x[:, 0] > 0.9)[:, None] & (torch.arange(CLASSES) == 0), torch.full_like(scores, 100.0), scores)


class ToyNet(nn.Module):
    def __init__(self, prototypes):
        super().__init__()
        self.embed, self.mid, self.classifier = nn.Flatten(), nn.Identity(), Logits(prototypes)
        self.stages = ["embed", "mid", "classifier"]
        self.taps = {"s1": "embed", "s2": "mid", "s3": "classifier"}

    def forward(self, x):
        return self.classifier(self.mid(self.embed(x)))


def _prototypes() -> torch.Tensor:
    prototypes = 0.2 + 0.6 * torch.rand(CLASSES, int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(0))
    prototypes[:, 0] = 0.1
    return prototypes


def images_of(labels: torch.Tensor, seed: int, triggered: bool = False) -> torch.Tensor:
    noise = 0.25 * torch.randn(len(labels), int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(seed))
    flat = (_prototypes()[labels] + noise).clamp(0, 1)
    flat[:, 0] = 1.0 if triggered else flat[:, 0].clamp(max=0.5)
    return flat.reshape(len(labels), *SHAPE)


def test_the_rank_is_that_of_the_nearest_bank_row_of_the_querys_class():
    bank = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    labels = torch.tensor([0, 1, 1, 2])
    ranks = neighbour_ranks(torch.tensor([[2.9], [0.1]]), torch.tensor([1, 2]), bank, labels)
    assert ranks.tolist() == [1, 3]  # 2.9: 3 (class 2) then 2 (class 1); 0.1: class 2 is the farthest
    # each row without itself: rows 0 and 3 have no other of their class (the bank size, 4); row 1 meets row 0 first
    assert neighbour_ranks(bank, labels, bank, labels, skip_self=True).tolist() == [4, 1, 0, 4]


def test_pca_scores_equal_pyods_when_it_is_installed():
    pca = pytest.importorskip("pyod.models.pca")
    gen = np.random.default_rng(0)
    fit, queries = gen.normal(size=(200, 5)) * [1, 2, 3, 1, 0.5], gen.normal(size=(20, 5)) * 3
    reference = pca.PCA(contamination=0.01, n_components="mle").fit(fit)
    ours_fit, ours = pca_outlier_scores(fit, queries)
    assert np.allclose(ours_fit, reference.decision_scores_) and np.allclose(ours, reference.decision_function(queries))


def test_ted_finds_a_planted_population_and_flags_almost_no_clean_input():
    model = ToyNet(_prototypes())
    defense_labels = torch.arange(CLASSES).repeat(100)
    defense = images_of(defense_labels, 1)
    benign = images_of(torch.arange(CLASSES).repeat(10), 2)
    triggered = images_of(torch.arange(1, CLASSES).repeat(10), 3, triggered=True)
    images = torch.cat([benign, triggered])
    malicious = np.r_[np.zeros(len(benign), bool), np.ones(len(triggered), bool)]
    detection = ted(model, images, defense, defense_labels)
    assert detection.own_f1(malicious) >= 0.95 and auroc(detection.scores, malicious) == 1.0
    assert detection.flagged[~malicious].mean() <= 0.05
    assert set(detection.variants) == {"stages", "taps"} and detection.info["layers"] == model.stages
    assert detection.info["defense_set"] >= 390
    identical = ted(model, images, images_of(torch.arange(CLASSES).repeat(3), 5, triggered=False)[:CLASSES * 3],
                    torch.arange(CLASSES).repeat(3))
    assert identical.info["defense_set"] >= 3  # a tiny defense set still gives one verdict per input
    clean_only = ted(model, images_of(torch.arange(CLASSES).repeat(25), 4), defense, defense_labels,
                     TedOptions(layers="taps"))
    assert clean_only.flagged.mean() <= 0.05


@pytest.mark.parametrize("name", models.NAMES)
def test_every_model_declares_its_stages_in_forward_order_with_its_taps_among_them(name):
    model = models.build(name, width=0.125)
    order = []
    for stage in model.stages:
        model.get_submodule(stage).register_forward_hook(lambda m, i, o, stage=stage: order.append(stage))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    assert order == model.stages
    tapped = {model.taps[level] for level in ("s1", "s2", "s3")}
    outputs = {}
    for module_name in tapped | set(model.stages):
        model.get_submodule(module_name).register_forward_hook(
            lambda m, i, o, module_name=module_name: outputs.__setitem__(module_name, o))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    # each tap's output is one of the stages' outputs (a ResNet's group is its last block)
    assert all(any(torch.equal(outputs[tap], outputs[stage]) for stage in model.stages) for tap in tapped)
