"""Algorithm 1's loss, Lt = L1 + L2 + λ·L3, against a direct computation on a hand-made batch."""
import copy

import pytest
import torch
import torch.nn.functional as F

import models
from attacks.poisoning import Batch
from regularizers import mmd2
from training.loss import backdoor_cross_entropy
from training.trainer import Trainer
from training import TrainSettings

TARGET = 0


def hand_made_batch():
    """4 clean target-class rows, 3 clean rows of other classes, 3 poisoned rows (labelled with
    the target), 2 WaNet noise rows (true labels kept)."""
    gen = torch.Generator().manual_seed(0)
    source = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    poisoned = torch.tensor([False] * 7 + [True] * 3 + [False] * 2)
    noise = torch.tensor([False] * 10 + [True] * 2)
    y = torch.where(poisoned, torch.full_like(source, TARGET), source)
    return Batch(torch.rand(12, 3, 32, 32, generator=gen), y, poisoned, source, noise)


def direct_loss(model, batch, lamb, reduction, levels=("s1", "s2", "s3")):
    """L1, L2 and L3 written out from Algorithm 1 lines 9–12 on a copy of the model."""
    features = {}
    for level, module in models.tap_modules(model, levels).items():
        module.register_forward_hook(lambda m, i, o, level=level: features.__setitem__(level, o))
    logits = model(batch.x)
    benign, malicious = ~batch.poisoned, batch.poisoned
    if reduction == "split":
        ce = F.cross_entropy(logits[benign], batch.y[benign]) + F.cross_entropy(logits[malicious], batch.y[malicious])
    else:
        ce = F.cross_entropy(logits, batch.y)
    benign_target = (batch.source == TARGET) & ~batch.poisoned & ~batch.noise
    l3 = sum(mmd2(features[level][malicious], features[level][benign_target]) for level in levels) / len(levels)
    return (ce + lamb * l3).item()


@pytest.mark.parametrize("reduction", ["split", "pooled"])
@pytest.mark.parametrize("lamb", [0.0, 0.3])
def test_trainer_step_loss_is_l1_plus_l2_plus_lambda_l3(reduction, lamb):
    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125)
    config = TrainSettings(mlmmdr_lamb=lamb, ce_reduction=reduction)
    expected = direct_loss(copy.deepcopy(model), hand_made_batch(), lamb, reduction)
    trainer = Trainer(model, None, config, torch.device("cpu"))
    try:
        terms = trainer.step(hand_made_batch())
    finally:
        trainer.close()
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_split_weighs_each_group_by_its_own_size():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    poisoned = torch.tensor([False, False, False, True])
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    loss, l1, l2 = backdoor_cross_entropy(logits, labels, poisoned, "split")
    assert l1.item() == pytest.approx(per_sample[:3].mean().item())
    assert l2.item() == pytest.approx(per_sample[3].item())
    assert loss.item() == pytest.approx(l1.item() + l2.item())
    pooled, _, _ = backdoor_cross_entropy(logits, labels, poisoned, "pooled")
    assert pooled.item() == pytest.approx(per_sample.mean().item())


def test_a_batch_without_poisoned_samples_has_l2_zero():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss, l1, l2 = backdoor_cross_entropy(logits, labels, torch.zeros(5, dtype=torch.bool))
    assert l2.item() == 0.0
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
