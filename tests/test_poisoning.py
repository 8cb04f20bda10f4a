import torch

import attacks
from attacks.poisoning import PoisonedData


def make(digits, attack="patched", **kw):
    return PoisonedData(digits.train_x, digits.train_y, attacks.build(attack), **kw)


def test_poisoned_subset_size_labels_and_flags(digits):
    data = make(digits, poison_ratio=0.1, seed=0)
    n = len(digits.train_y)
    assert len(data.poison_index) == round(0.1 * n)
    assert len(data) == n + len(data.poison_index)  # added: C = D ∪ U
    assert (digits.train_y[data.poison_index] != 0).all()
    seen_poisoned = seen_total = 0
    for batch in data.batches(128, epoch=0):
        assert torch.equal(batch.y[batch.poisoned.to(batch.y.device)].cpu(),
                           torch.zeros(int(batch.poisoned.sum()), dtype=torch.long))
        assert torch.equal(batch.y[~batch.poisoned].cpu(), batch.source[~batch.poisoned])
        assert (batch.source[batch.poisoned] != 0).all()
        # trigger applied after augmentation: the patch is intact on every poisoned row
        assert (batch.x[batch.poisoned][:, :, -3:, -3:] == 1.0).all()
        seen_poisoned += int(batch.poisoned.sum())
        seen_total += len(batch.y)
    assert seen_poisoned == len(data.poison_index) and seen_total == len(data)


def test_subset_is_fixed_by_the_seed(digits):
    assert torch.equal(make(digits, seed=3).poison_index, make(digits, seed=3).poison_index)
    assert not torch.equal(make(digits, seed=3).poison_index, make(digits, seed=4).poison_index)


def test_replace_mode_keeps_the_training_set_size(digits):
    data = make(digits, mode="replace", poison_ratio=0.2)
    assert len(data) == len(digits.train_y)
    assert int((data.kind == 1).sum()) == round(0.2 * len(digits.train_y))


def test_wanet_noise_samples_keep_true_labels_and_are_not_poison(digits):
    data = make(digits, attack="warped")
    assert len(data.noise_index) == 2 * len(data.poison_index)
    assert not set(data.noise_index.tolist()) & set(data.poison_index.tolist())
    noise_rows = 0
    for batch in data.batches(256, epoch=0):
        assert not (batch.noise & batch.poisoned).any()
        assert torch.equal(batch.y[batch.noise].cpu(), batch.source[batch.noise])
        noise_rows += int(batch.noise.sum())
    assert noise_rows == len(data.noise_index)


def test_benign_target_mask_is_clean_target_rows_only(digits):
    batch = next(make(digits, attack="warped").batches(512, epoch=0))
    mask = batch.benign_target_mask(0)
    assert mask.any()
    assert (batch.source[mask] == 0).all() and not (batch.poisoned[mask] | batch.noise[mask]).any()
