"""The attacks built to be latent-inseparable (issue 26): known answers for each trigger, cover
and source-specific poisoning, and the gathered batch order that lets ML-MMDR act at low rates."""
import pytest
import torch

import attacks
from attacks import stamps
from attacks.adaptive_patch import AdaptivePatch
from attacks.poisoning import COVER, POISONED, PoisonedData, gathered_batches
from inference import ba_asr
from utils.errors import ParameterError
from utils.seed import generator

SIDE = 32


def images(count, seed=0, grey=False):
    x = torch.rand(count, 1 if grey else 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))
    return x.expand(-1, 3, -1, -1).clone() if grey else x


def dataset(count=2000, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    pixels = torch.randint(0, 256, (count, 3, SIDE, SIDE), dtype=torch.uint8, generator=gen)
    return pixels, labels[torch.randperm(count, generator=gen)]


def test_adaptive_blend_plants_a_fixed_half_of_the_pieces_in_training_and_the_whole_pattern_at_test():
    attack = attacks.build("adaptive_blend", seed=3)
    x = images(6)
    ordinal = torch.arange(6)
    planted = attack.train_trigger(x, "poisoned", ordinal, 6)
    pattern = attack.pattern
    side = SIDE // 4
    for row in range(6):
        changed = []
        for piece in range(16):
            r, c = divmod(piece, 4)
            window = (slice(None), slice(r * side, (r + 1) * side), slice(c * side, (c + 1) * side))
            expected = x[row][window] + 0.15 * (pattern[window] - x[row][window])
            if torch.allclose(planted[row][window], expected, atol=1e-6):
                changed.append(piece)
            else:  # a piece is either blended at the training α or untouched
                assert torch.equal(planted[row][window], x[row][window])
        assert len(changed) == 8
    # the same image gets the same pieces every epoch; another image, other pieces
    assert torch.equal(attack.train_trigger(x[:1], "poisoned", ordinal[:1], 6), planted[:1])
    chosen = attack.chosen_pieces("poisoned", ordinal)
    assert len({tuple(row.tolist()) for row in chosen}) > 1
    assert not torch.equal(attack.chosen_pieces("cover", ordinal), chosen)
    # test: the whole pattern at the test α
    assert torch.allclose(attack(x), x + 0.2 * (pattern - x), atol=1e-6)


def test_adaptive_blend_is_grey_on_a_grey_dataset():
    grey = attacks.build("adaptive_blend", grayscale=True)
    assert torch.equal(grey.pattern[0], grey.pattern[1]) and torch.equal(grey.pattern[1], grey.pattern[2])
    x = images(2, grey=True)
    out = grey(x)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert not torch.equal(attacks.build("adaptive_blend").pattern[0], attacks.build("adaptive_blend").pattern[1])


def test_every_patch_stamp_is_grey_and_inside_the_padded_border():
    made = [stamps.right_corner(), stamps.left_corner(), stamps.large_rings(), stamps.four_corners(),
            stamps.square_stripes(), stamps.tact_square()]
    for stamp in made:
        rows, cols = stamp.mask.nonzero(as_tuple=True)
        assert rows.min() >= 2 and cols.min() >= 2 and rows.max() <= 29 and cols.max() <= 29
        assert stamp.pattern.dim() == 2  # one value per pixel: the same in every channel
    with pytest.raises(ValueError, match="overlap"):
        stamps.right_corner() + stamps.right_corner()


def test_adaptive_patch_poisoned_images_carry_exactly_one_patch_at_its_alpha_in_the_reference_order():
    pixels, labels = dataset()
    attack = attacks.build("adaptive_patch")
    data = PoisonedData(pixels, labels, attack, target=0, poison_ratio=0.004, seed=1, augment=False,
                        batching="random", batch_size=len(pixels))
    assert (len(data.poison_index), len(data.cover_index)) == (8, 16)
    assert not set(data.poison_index.tolist()) & set(data.cover_index.tolist())
    batch = next(data.batches(len(data), epoch=0))
    order = torch.randperm(len(data), generator=generator(1, "epoch-0"))  # the epoch's order: one batch of all
    clean = pixels[data.base_index[order]].float() / 255
    kinds = data.kind[order]
    for kind, group_size in ((POISONED, 8), (COVER, 16)):
        rows = (kinds == kind).nonzero().flatten()
        ordinals = data.ordinal[order][rows]
        for row, ordinal in zip(rows.tolist(), ordinals.tolist()):
            which = ordinal * 4 // group_size  # the reference: consecutive quarters of the group
            stamp, alpha = attack.train_stamps[which], attack.ap_alphas[which]
            expected = stamps.plant(clean[row:row + 1], stamp, alpha)[0]
            assert torch.allclose(batch.x[row], expected, atol=1e-6)
            outside = stamp.mask == 0
            assert torch.equal(batch.x[row][:, outside], clean[row][:, outside])
        label = batch.y[rows]
        assert bool((label == 0).all()) if kind == POISONED else torch.equal(label, labels[data.base_index[order][rows]])
    assert AdaptivePatch.trigger_of(torch.arange(8), 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_adaptive_patch_test_trigger_is_two_triggers_at_full_strength():
    attack = attacks.build("adaptive_patch")
    x = images(3)
    out = attack(x)
    mask = attack.test_stamp.mask.bool()
    assert torch.equal(out[:, :, mask], attack.test_stamp.pattern[mask].expand(3, 3, -1))
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])
    both_corners = stamps.left_corner().mask + stamps.right_corner().mask
    assert torch.equal(attack.test_stamp.mask, both_corners + stamps.four_corners().mask)


def test_tact_poisons_only_the_source_class_and_its_cover_images_keep_their_labels():
    pixels, labels = dataset()
    attack = attacks.build("tact")
    data = PoisonedData(pixels, labels, attack, target=0, poison_ratio=0.003, seed=0, augment=False)
    assert len(data.poison_index) == 6 and len(data.cover_index) == 6  # round(0.003 · 2000), 1 cover per poison
    assert set(labels[data.poison_index].tolist()) == {1}
    # Tang et al.'s covers: every class but the source (1) and the target (0)
    assert set(labels[data.cover_index].tolist()) <= set(range(2, 10))
    wider = PoisonedData(pixels, labels, attack, target=0, poison_ratio=0.05, seed=0, augment=False)
    assert set(labels[wider.cover_index].tolist()) == set(range(2, 10))
    toolbox = PoisonedData(pixels, labels, attacks.build("tact", tact_cover=[5, 7]), target=0, poison_ratio=0.003,
                           seed=0, augment=False)
    assert set(labels[toolbox.cover_index].tolist()) <= {5, 7} and len(toolbox.cover_index) == 6
    batch = data.make_batch(torch.arange(len(data)))
    cover = batch.cover
    assert torch.equal(batch.y[cover], labels[data.base_index[cover]])
    assert bool((batch.y[batch.poisoned] == 0).all())
    assert not bool(batch.benign_target_mask(0)[cover].any())
    x = images(2)
    stamped, mask = attack(x), attack.stamp.mask.bool()
    assert torch.equal(stamped[:, :, ~mask], x[:, :, ~mask])
    assert torch.equal(stamped[:, :, mask], attack.stamp.pattern[mask].expand(2, 3, -1))
    assert torch.equal(batch.x[batch.poisoned][:, :, mask], attack.stamp.pattern[mask].expand(6, 3, -1))
    with pytest.raises(ParameterError, match="source classes"):
        PoisonedData(pixels, labels, attack, target=0, poison_ratio=0.2, seed=0)
    with pytest.raises(ParameterError) as caught:
        attacks.build("tact", tact_source=[1], tact_cover=[1, 5])
    assert caught.value.parameter == "tact_cover"


def test_a_source_specific_asr_counts_the_source_classes_and_reports_the_others_beside():
    test_y = torch.tensor([0, 1, 1, 2, 2, 3])
    triggered = torch.tensor([0, 2, 2, 0, 3])            # predictions of the non-target images 1, 1, 2, 2, 3
    result = ba_asr(test_y.clone(), test_y, triggered, target=0, sources=(1,))
    # class 2's images reach the target once in two, class 3's never: 1 in 3 overall, 1 in 2 at worst
    assert result == {"ba": 1.0, "asr": 0.5, "asr_other_classes": pytest.approx(1 / 3), "asr_worst_other_class": 0.5}
    assert ba_asr(test_y.clone(), test_y, triggered, target=0) == {"ba": 1.0, "asr": pytest.approx(0.4)}


def test_cover_count_follows_the_attack_or_the_flag_and_is_disjoint():
    pixels, labels = dataset()
    blend = attacks.build("adaptive_blend")
    data = PoisonedData(pixels, labels, blend, target=0, poison_ratio=0.003, seed=2)
    assert len(data.cover_index) == len(data.poison_index) == 6
    data = PoisonedData(pixels, labels, blend, target=0, poison_ratio=0.003, seed=2, cover_ratio=0.01)
    assert len(data.cover_index) == 20 and not set(data.cover_index.tolist()) & set(data.poison_index.tolist())
    plain = PoisonedData(pixels, labels, attacks.build("patched"), target=0, poison_ratio=0.1, seed=2)
    assert len(plain.cover_index) == 0 and not (plain.kind == COVER).any()


def test_gathered_batches_keep_every_image_once_and_put_poisoned_ones_together():
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(1000, generator=gen)
    is_poisoned = order < 30
    batches = gathered_batches(order, is_poisoned, 256, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert [len(b) for b in batches] == [256, 256, 256, 232]
    per_batch = [int((b < 30).sum()) for b in batches]
    assert sum(per_batch) == 30 and all(count == 0 or count >= 2 for count in per_batch)
    assert max(per_batch) <= 23  # round(256 · 0.1 / 1.1): what a batch holds at the paper's rate


def test_auto_batching_gathers_only_at_low_rates():
    pixels, labels = dataset()
    attack = attacks.build("patched")
    paper = PoisonedData(pixels, labels, attack, poison_ratio=0.1, seed=0, batch_size=64)
    low = PoisonedData(pixels, labels, attack, poison_ratio=0.003, seed=0, batch_size=64)
    assert not paper.gather and low.gather
    random = PoisonedData(pixels, labels, attack, poison_ratio=0.1, seed=0, batching="random")
    first = [b.poisoned for b in paper.batches(64, 0)]
    assert all(torch.equal(a, b.poisoned) for a, b in zip(first, random.batches(64, 0)))
    counts = [int(b.poisoned.sum()) for b in low.batches(64, 0)]
    assert sum(counts) == 6 and all(c == 0 or c >= 2 for c in counts)


def test_tact_on_digits_fires_on_its_source_class_and_on_no_other(tmp_path):
    """Issue 42's acceptance check: TaCT trained as published (pooled CE, random batches, stamped
    copies added) with Tang et al.'s covers from every other class is source-specific. 5% poisoning
    (72 images of class 1, as many covers): the reference's 0.3% is 4 images of digits' 1,437. With
    backdoor-toolbox's covers (5 and 7 only) the same run fired on uncovered classes at up to 0.77."""
    import json

    import main
    from pipeline.cli import run_cli

    argv = ["--data_name", "digits", "--attack_name", "tact", "--poison_ratio", "0.05", "--width", "0.125",
            "--no_progress", "--out_dir", str(tmp_path)]
    assert run_cli(main.main, argv) == 0
    metrics = json.loads(next(tmp_path.glob("digits_vgg11_tact*/metrics.json")).read_text())
    assert metrics["ba"] >= 0.9 and metrics["asr"] >= 0.9
    assert metrics["asr_worst_other_class"] <= 0.2
