"""Beatrix on synthetic feature maps with known answers, and against a literal transcription of the
reference's formulas (wanlunsec/Beatrix defenses/Beatrix/Beatrix.py @ 685827e)."""
import math

import numpy as np
import pytest
import torch

from defenses import subspace_reconstruction
from defenses.detectors.beatrix import BEATRIX, BeatrixOptions, beatrix, beatrix_class_test, gram_features, kmmd
from metrics.f1 import f1_score
from utils.errors import ParameterError

CHANNELS, SIDE = 8, 8


def class_templates(rng, classes=1):
    """A fixed non-negative (post-ReLU) spatial template per class and channel: a class's maps
    co-activate their channels in one spatial pattern, as a trained layer's maps of one class do."""
    return np.maximum(rng.normal(size=(classes, CHANNELS, SIDE, SIDE)), 0)


def draw_maps(templates, misaligned, rng, amplitude=0.03, noise=0.05, trigger_shift=0.0):
    """Maps a·template + noise with channel 1 a copy of channel 0's template (they co-activate).
    In a ``misaligned`` map, channel 1's positions are permuted: every channel keeps its values,
    hence its spatial mean and variance, but channel 1 no longer co-activates with channel 0.
    ``trigger_shift`` adds a constant to channel 7 of the misaligned maps (a change of mean)."""
    count = len(misaligned)
    layout = np.broadcast_to(templates.reshape(1, CHANNELS, -1), (count, CHANNELS, SIDE * SIDE)).copy()
    layout[:, 1] = layout[:, 0]
    for row in np.flatnonzero(misaligned):
        layout[row, 1] = layout[row, 1][rng.permutation(SIDE * SIDE)]
    maps = (1 + amplitude * rng.normal(size=(count, CHANNELS, 1))) * layout
    maps += noise * rng.normal(size=maps.shape)
    maps[misaligned, 7] += trigger_shift
    return maps.reshape(count, CHANNELS, SIDE, SIDE)


def pool(seed=0, benign=200, malicious=100, clean=30):
    rng = np.random.default_rng(seed)
    templates = class_templates(rng)[0]
    truth = np.r_[np.zeros(benign, bool), np.ones(malicious, bool)]
    maps = draw_maps(templates, truth, rng)
    clean_maps = draw_maps(templates, np.zeros(clean, bool), rng)
    return maps, truth, clean_maps


@pytest.mark.numerics
def test_a_changed_co_activation_is_flagged_while_channel_means_match():
    maps, truth, clean_maps = pool()
    result = beatrix(maps, np.zeros(len(maps), int), clean_maps, np.zeros(len(clean_maps), int))
    assert result.own_f1(truth) >= 0.9 and result.oracle_f1(truth) >= 0.95
    # benign maps are flagged no more often than the 95th-percentile threshold allows (≤ ~5%, noise)
    assert result.flagged[~truth].mean() <= 0.1
    # random flags at the same rate score far lower
    random_flags = np.random.default_rng(1).permutation(result.flagged)
    assert f1_score(random_flags, truth) < 0.5 < result.own_f1(truth) - 0.3

    # a test on the per-channel means cannot see the change: subspace reconstruction of the
    # spatially pooled maps does no better than flagging everything (F1 = 2·100/(300 + 100))
    means, clean_means = maps.reshape(len(maps), CHANNELS, -1).mean(2), clean_maps.reshape(30, CHANNELS, -1).mean(2)
    assert subspace_reconstruction(means, clean_means).oracle_f1(truth) <= 0.6
    # and neither can one on each channel's spread
    spread = maps.reshape(len(maps), CHANNELS, -1).std(2)
    assert np.abs(spread[truth].mean(0) - spread[~truth].mean(0)).max() < 0.05


@pytest.mark.numerics
def test_unchanged_maps_are_flagged_at_the_clean_rate_only():
    rng = np.random.default_rng(2)
    templates = class_templates(rng)[0]
    truth = np.r_[np.zeros(150, bool), np.ones(150, bool)]
    maps = draw_maps(templates, np.zeros(300, bool), rng)       # "malicious" half drawn as the benign
    clean_maps = draw_maps(templates, np.zeros(30, bool), rng)
    result = beatrix(maps, np.zeros(300, int), clean_maps, np.zeros(30, int))
    assert result.flagged.mean() <= 0.12
    assert result.own_f1(truth) < 0.25 and result.oracle_f1(truth) < 0.75


def test_gram_features_by_hand():
    # one map, C = 2 channels at 2 positions: F = [[1, -2], [3, 1]]
    maps = torch.tensor([[[1.0, -2.0], [3.0, 1.0]]])
    # p = 1: F Fᵀ = [[5, 1], [1, 10]], upper triangle row by row
    assert torch.allclose(gram_features(maps, 1), torch.tensor([[5.0, 1.0, 10.0]], dtype=torch.float64))
    # p = 2: F² = [[1, 4], [9, 1]] → [[17, 13], [13, 82]], square root
    expected = torch.tensor([[17.0, 13.0, 82.0]], dtype=torch.float64).sqrt()
    assert torch.allclose(gram_features(maps, 2), expected)
    # p = 3: F³ = [[1, -8], [27, 1]] → [[65, 19], [19, 730]]: the signed cube root keeps a sign
    expected = torch.tensor([[65.0, 19.0, 730.0]], dtype=torch.float64) ** (1 / 3)
    assert torch.allclose(gram_features(maps, 3), expected)
    # F = [[1, 2], [−3, −1]]: the off-diagonal entry is negative at odd orders, −5 at p = 1 and
    # 1·(−27) + 8·(−1) = −35 at p = 3, whose signed cube root is −35^(1/3)
    negative = torch.tensor([[[1.0, 2.0], [-3.0, -1.0]]])
    assert gram_features(negative, 1)[0, 1] == -5.0
    assert torch.isclose(gram_features(negative, 3)[0, 1], torch.tensor(-(35.0 ** (1 / 3)), dtype=torch.float64))


# --- a literal transcription of the reference's formulas, on whole C×C matrices, in float64 ---

def reference_gram(maps, order):
    powered = torch.as_tensor(maps, dtype=torch.float64) ** order
    powered = powered.reshape(powered.shape[0], powered.shape[1], -1)
    gram = torch.matmul(powered, powered.transpose(2, 1)).triu()
    return (gram.sign() * gram.abs() ** (1 / order)).reshape(gram.shape[0], -1)


def reference_bounds(clean, orders):
    bounds = []
    for order in orders:
        grams = reference_gram(clean, order)
        median = grams.median(dim=0, keepdim=True)[0]
        mad = (grams - median).abs().median(dim=0, keepdim=True)[0]
        bounds.append((median - 10 * mad, median + 10 * mad))
    return bounds


def reference_deviations(tested, bounds, orders):
    total = 0
    for (low, high), order in zip(bounds, orders):
        grams = reference_gram(tested, order)
        total = total + (torch.relu(low - grams) / (low + 1e-6).abs()).sum(dim=1)
        total = total + (torch.relu(grams - high) / (high + 1e-6).abs()).sum(dim=1)
    channels = tested.shape[1]
    return total.numpy() / (channels * channels / 2) / len(orders)


def reference_thresholds(clean, orders, step=5):
    size = len(clean) // step
    held_out = []
    for fold in range(step):
        mask = np.ones(len(clean), bool)
        mask[fold * size:(fold + 1) * size] = False
        held_out.append(reference_deviations(clean[~mask], reference_bounds(clean[mask], orders), orders))
    ordered = np.sort(np.concatenate(held_out))
    return ordered[int(len(ordered) * 0.95)], ordered[int(len(ordered) * 0.99)]


@pytest.mark.numerics
def test_scores_and_thresholds_equal_the_reference_formulas():
    rng = np.random.default_rng(3)
    # signed, heavy-tailed maps with a few scaled outliers: many entries cross the bounds
    clean = rng.standard_t(4, size=(33, 6, 3, 3))
    tested = rng.standard_t(4, size=(40, 6, 3, 3)) * np.where(rng.random(40) < 0.3, 3.0, 1.0)[:, None, None, None]
    result = beatrix(tested, np.zeros(40, int), clean, np.zeros(33, int), seed=5)
    chosen = np.random.default_rng(5).permutation(33)[:30]   # the seeded draw of 30 of the 33
    orders = list(range(1, 9))
    expected = reference_deviations(tested, reference_bounds(clean[chosen], orders), orders)
    assert np.allclose(result.scores, expected, rtol=1e-9, atol=1e-12) and expected.max() > 0
    threshold_95, threshold_99 = reference_thresholds(clean[chosen], orders)
    assert math.isclose(result.info["thresholds"]["0"], threshold_95, rel_tol=1e-9)
    assert math.isclose(result.info["thresholds_by_percentile"]["99"]["0"], threshold_99, rel_tol=1e-9)
    assert np.array_equal(result.flagged, expected > threshold_95)
    assert np.array_equal(result.decisions["percentile_99"], expected > threshold_99)


def reference_kmmd(first, second):
    pooled = torch.cat([torch.as_tensor(first), torch.as_tensor(second)], 0)
    distance = ((pooled[:, None] - pooled[None]) ** 2).sum(2)
    bandwidth = torch.median(distance.reshape(distance.shape[0], -1)) / 2 ** (2 // 2)
    kernel = sum(torch.exp(-distance / (bandwidth * 2.0 ** i)) for i in range(2))
    n, m = len(first), len(second)
    value = kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
    return float(m * n / (m + n) * value)


def test_kmmd_equals_the_reference_formula():
    rng = np.random.default_rng(4)
    first, second = rng.normal(size=(23, 5)), rng.normal(size=(8, 5)) + 0.7
    assert math.isclose(kmmd(first, second), reference_kmmd(first, second), rel_tol=1e-9)
    assert kmmd(first, first[::-1].copy()) == pytest.approx(0.0, abs=1e-12)


def class_data(seed=0, trigger_shift=2.0, classes=6, target=2, unusual=0.1):
    """Every class: 60 benign test maps and 30 clean ones from its own templates; the target class
    also holds 40 malicious maps (misaligned channel 1, channel 7 shifted by ``trigger_shift``).
    A share ``unusual`` of the benign test maps has one channel amplified 1.6 times, so that every
    class has inputs beyond its bounds, as the reference's regime has (5% of clean inputs above
    the 95th percentile); without them most classes flag nothing, J = 0 for most classes, and the
    anomaly index divides by a MAD of 0."""
    rng = np.random.default_rng(seed)
    templates = class_templates(rng, classes)
    maps, predicted, truth, clean_maps, clean_labels = [], [], [], [], []
    for label in range(classes):
        malicious = np.r_[np.zeros(60, bool), np.ones(40 if label == target else 0, bool)]
        drawn = draw_maps(templates[label], malicious, rng, trigger_shift=trigger_shift)
        for row in np.flatnonzero(~malicious & (rng.random(len(malicious)) < unusual)):
            drawn[row, rng.integers(CHANNELS)] *= 1.6
        maps.append(drawn)
        predicted.append(np.full(len(malicious), label))
        truth.append(malicious)
        clean_maps.append(draw_maps(templates[label], np.zeros(30, bool), rng))
        clean_labels.append(np.full(30, label))
    return tuple(np.concatenate(part) for part in (maps, predicted, truth, clean_maps, clean_labels))


@pytest.mark.numerics
def test_class_test_names_the_target_when_its_flagged_maps_also_shift_a_mean():
    maps, predicted, truth, clean_maps, clean_labels = class_data()
    detection = beatrix(maps, predicted, clean_maps, clean_labels)
    verdict = beatrix_class_test(maps, predicted, clean_maps, clean_labels, detection=detection)
    assert verdict.flagged_classes == [2]
    assert verdict.statistic[2] > math.exp(2) > max(v for k, v in verdict.statistic.items() if k != 2)
    # the per-sample flags inside the infected class: the malicious maps and its unusual benign ones
    assert f1_score(verdict.flagged, truth) >= 0.85
    assert set(verdict.to_dict()) >= {"statistic", "flagged_classes", "threshold", "kmmd"}
    # computed afresh from the same arguments, the verdict is the same
    again = beatrix_class_test(maps, predicted, clean_maps, clean_labels)
    assert again.statistic == verdict.statistic


@pytest.mark.numerics
def test_class_test_pools_channel_means_so_a_co_activation_change_alone_is_missed():
    # the per-sample rule still flags the malicious maps; the class test's KMMD compares the
    # spatially mean-pooled maps of the flagged and unflagged inputs, in which they match
    maps, predicted, truth, clean_maps, clean_labels = class_data(trigger_shift=0.0)
    detection = beatrix(maps, predicted, clean_maps, clean_labels)
    assert detection.flagged[truth].mean() >= 0.95
    plain = beatrix_class_test(maps, predicted, clean_maps, clean_labels, detection=detection)
    assert plain.flagged_classes == [] and plain.statistic[2] < math.exp(2)
    shifted = class_data(trigger_shift=2.0)
    with_shift = beatrix_class_test(*shifted[:2], *shifted[3:])
    assert plain.info["kmmd"]["2"] < with_shift.info["kmmd"]["2"] / 5


def test_bad_parameters_name_themselves():
    for name, value in [("max_order", 0), ("clean_per_class", 1), ("mad_factor", 0.0), ("folds", 1),
                        ("percentile", 100.0), ("percentile", -1.0), ("kernel_num", 0), ("kernel_mul", 0.0),
                        ("class_threshold", -1.0), ("mad_factor", float("nan"))]:
        with pytest.raises(ParameterError) as caught:
            BeatrixOptions(**{name: value})
        assert caught.value.parameter == name
    with pytest.raises(ParameterError) as caught:
        BeatrixOptions(clean_per_class=4)          # fewer than the 5 folds hold out anything
    assert caught.value.parameter == "clean_per_class"


def test_bad_inputs_are_refused():
    maps, _, clean_maps = pool(benign=20, malicious=10)
    with pytest.raises(ValueError, match="class 1 holds 0 clean maps"):
        beatrix(maps, np.ones(len(maps), int), clean_maps, np.zeros(30, int))
    with pytest.raises(ValueError, match="feature maps"):
        beatrix(maps.reshape(len(maps), -1), np.zeros(len(maps), int), clean_maps, np.zeros(30, int))
    with pytest.raises(ValueError, match="same shape"):
        beatrix(maps[:, :4], np.zeros(len(maps), int), clean_maps, np.zeros(30, int))


def test_deterministic_for_a_seed_and_the_seed_draws_the_clean_maps():
    maps, _, clean_maps = pool(benign=40, malicious=20, clean=45)
    labels = np.zeros(45, int)
    options = BeatrixOptions(max_order=3)
    first = beatrix(maps, np.zeros(60, int), clean_maps, labels, options, seed=7)
    second = beatrix(torch.as_tensor(maps), torch.zeros(60, dtype=torch.long), clean_maps, labels, options, seed=7)
    assert np.array_equal(first.scores, second.scores) and np.array_equal(first.flagged, second.flagged)
    assert first.info == second.info and first.info["clean_per_class_used"] == {"0": 30}
    other = beatrix(maps, np.zeros(60, int), clean_maps, labels, options, seed=8)
    assert not np.array_equal(first.scores, other.scores)


def test_registry_record_runs_on_detector_inputs():
    from defenses.detectors.detector import DetectorInputs

    maps, truth, clean_maps = pool(benign=40, malicious=20)
    inputs = DetectorInputs(level="s2", maps=maps, predicted=np.zeros(60, int), clean_maps=clean_maps,
                            clean_labels=np.zeros(30, int))
    result = BEATRIX.run(inputs, BEATRIX.default_options(), 0)
    assert BEATRIX.consumes == "maps" and result.own_f1(truth) >= 0.9
    assert "percentile" in BEATRIX.describe(BEATRIX.default_options())


@pytest.mark.numerics
def test_the_class_test_record_reads_flat_class_level_inputs():
    """What the evaluation hands a class-level detector is flat (one row per map) with the level's
    map shape: the registered class test reshapes it and names the class holding the planted maps."""
    from defenses.detectors.beatrix import BEATRIX_CLASS
    from defenses.detectors.detector import DetectorInputs

    maps, labels, truth, clean_maps, clean_labels = class_data()
    inputs = DetectorInputs(level="s2", class_features=maps.reshape(len(maps), -1), class_labels=labels,
                            clean_features=clean_maps.reshape(len(clean_maps), -1), clean_labels=clean_labels,
                            map_shape=maps.shape[1:])
    verdict = BEATRIX_CLASS.run(inputs, BEATRIX_CLASS.default_options(), 0)
    assert BEATRIX_CLASS.consumes == "classes" and verdict.flagged_classes == [2]
    assert f1_score(verdict.flagged, truth) >= 0.85


def test_a_memo_scores_each_map_once_and_changes_nothing(monkeypatch):
    """The evaluation runs Beatrix on samples and controls that share most maps: with a memo, a map
    met again is not scored again, and every score, threshold and flag is a fresh call's."""
    import defenses.detectors.beatrix as module

    maps, truth, clean_maps = pool(benign=60, malicious=30)
    predicted, labels = np.zeros(len(maps), int), np.zeros(len(clean_maps), int)
    options = BeatrixOptions(max_order=3)
    fresh = beatrix(maps, predicted, clean_maps, labels, options, seed=3)
    scored = []
    original = module._class_scores

    def counting(clean, tested, options, held_out_too=True):
        scored.append((len(tested), held_out_too))
        return original(clean, tested, options, held_out_too)

    monkeypatch.setattr(module, "_class_scores", counting)
    memo = {}
    first = beatrix(maps[:50], predicted[:50], clean_maps, labels, options, seed=3, memo=memo)
    again = beatrix(maps, predicted, clean_maps, labels, options, seed=3, memo=memo)
    assert scored == [(50, True), (40, False)]  # the 40 maps not seen, against the bounds already held out
    beatrix(maps[::-1].copy(), predicted, clean_maps, labels, options, seed=3, memo=memo)
    assert len(scored) == 2  # nothing new
    np.testing.assert_allclose(again.scores, fresh.scores, rtol=1e-12)
    np.testing.assert_allclose(first.scores, fresh.scores[:50], rtol=1e-12)
    assert np.array_equal(again.flagged, fresh.flagged) and again.info == fresh.info
    # another clean set (another seed draws other maps) is another memory
    beatrix(maps, predicted, clean_maps[::-1].copy(), labels, options, seed=3, memo=memo)
    assert scored[-1] == (90, True)
