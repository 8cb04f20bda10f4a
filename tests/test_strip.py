"""STRIP on a tiny deterministic classifier whose answer is known: a white 3×3 corner fixes its
prediction, so superimposing clean images cannot raise the entropy of a triggered input."""
import math

import numpy as np
import pytest
import torch

from defenses.detectors.strip import STRIP, StripOptions, strip, strip_decision, strip_entropy, strip_rates
from metrics.f1 import f1_score
from utils.errors import ParameterError

CLASSES, SHAPE = 10, (3, 8, 8)


def corner_trigger_classifier(backdoored: bool = True, scale: float = 10.0, seed: int = 0):
    """Class probabilities of a fixed random linear map of the (per-image centred) pixels; when
    ``backdoored``, an image whose top-left 3×3 corner is white in every channel (every value
    ≥ 0.95) is class 0 with probability 0.99 instead. ``scale`` 10 puts the clean entropy after
    superimposition near 1 bit, the paper's CIFAR-10 level (Table 3: mean 0.97)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(math.prod(SHAPE), CLASSES, generator=generator) * scale / math.sqrt(math.prod(SHAPE))
    trojan = torch.full((CLASSES,), 0.01 / (CLASSES - 1))
    trojan[0] = 0.99

    def predict_proba(images):
        flat = images.flatten(1)
        probabilities = torch.softmax((flat - flat.mean(1, keepdim=True)) @ weights, 1)
        if not backdoored:
            return probabilities
        white = images[:, :, :3, :3].amin(dim=(1, 2, 3)) >= 0.95
        return torch.where(white[:, None], trojan, probabilities)

    return predict_proba


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand((count,) + SHAPE, generator=torch.Generator().manual_seed(seed))


def triggered(batch: torch.Tensor) -> torch.Tensor:
    stamped = batch.clone()
    stamped[:, :, :3, :3] = 1.0
    return stamped


def pool(benign: int = 50, malicious: int = 50):
    """The pool (benign then triggered images), its truth, and the held-out overlay and fit sets
    (disjoint, as the reference's)."""
    inputs = torch.cat([images(benign, 1), triggered(images(malicious, 2))])
    truth = np.r_[np.zeros(benign, bool), np.ones(malicious, bool)]
    return inputs, truth, images(100, 3), images(100, 4)


def test_triggered_inputs_are_flagged_and_clean_ones_are_not():
    inputs, truth, overlays, fit = pool()
    result = strip(corner_trigger_classifier(), inputs, overlays, fit)
    rates = strip_rates(result.flagged, truth)
    # random flags at any rate score F1 ≤ 2·0.5·p/(p + 0.5) < 0.67 here; the trigger gives ≈ 1
    assert result.own_f1(truth) >= 0.95 and result.oracle_f1(truth) == 1.0
    assert rates["far"] == 0.0 and rates["frr"] <= 0.06
    random_flags = np.random.default_rng(0).random(len(truth)) < 0.5
    assert f1_score(random_flags, truth) < 0.7
    # entropy (bits) of a trojaned input: 0.99 on one class and 0.01 spread over nine
    assert np.allclose(-result.scores[truth], 0.1125, atol=1e-3)
    assert 0.5 < result.info["normal_mean"] < 2.0 and result.info["threshold"] < result.info["normal_mean"]


def test_a_clean_model_gives_triggered_inputs_clean_entropies():
    """The contrast: without a backdoor the corner does not fix the prediction, so triggered inputs
    are rejected only at the false rejection rate, as clean ones."""
    inputs, truth, overlays, fit = pool()
    result = strip(corner_trigger_classifier(backdoored=False), inputs, overlays, fit)
    assert result.flagged.mean() <= 0.06 and result.own_f1(truth) < 0.2
    assert result.oracle_f1(truth) < 0.8


def test_both_threshold_rules_are_offered():
    inputs, truth, overlays, fit = pool()
    result = strip(corner_trigger_classifier(), inputs, overlays, fit, StripOptions(threshold_rule="empirical"))
    assert set(result.decisions) == {"normal", "empirical"}
    assert np.array_equal(result.flagged, result.decisions["empirical"])
    assert result.info["threshold"] == result.info["empirical_threshold"]
    assert result.decision_f1(truth)["normal"] >= 0.95 and result.own_f1(truth) >= 0.95
    # the empirical 1% quantile of 100 fit entropies leaves at most 2 of them at or below it
    assert result.info["fit_frr"] <= 0.02


def test_entropy_is_the_mean_shannon_entropy_in_bits():
    base, overlays = images(4, 5), images(6, 6)
    indices = np.zeros((4, 3), dtype=int)

    def uniform(x):
        return torch.full((len(x), CLASSES), 1.0 / CLASSES)

    def one_hot(x):
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), CLASSES).float()

    assert np.allclose(strip_entropy(uniform, base, overlays, indices), math.log2(CLASSES))
    assert np.array_equal(strip_entropy(one_hot, base, overlays, indices), np.zeros(4))  # 0·log 0 = 0


def test_the_blend_is_the_unclipped_sum_as_cv2_addweighted_on_floats():
    base, overlays = images(2, 7), images(3, 8)
    indices = np.array([[0, 2], [1, 1]])
    seen = []

    def recorder(x):
        seen.append(x.clone())
        return torch.full((len(x), CLASSES), 1.0 / CLASSES)

    strip_entropy(recorder, base, overlays, indices, batch_images=3)
    blends = torch.cat(seen)
    bases, tops = base[[0, 0, 1, 1]], overlays[[0, 2, 1, 1]]
    assert [len(batch) for batch in seen] == [3, 1] and torch.equal(blends, bases + tops) and blends.max() > 1
    seen.clear()
    strip_entropy(recorder, base, overlays, indices, overlay_weight=0.5, clip=True)
    assert torch.equal(torch.cat(seen), (bases + 0.5 * tops).clamp(0, 1))


def test_overlays_are_drawn_per_input_from_the_held_out_set_only():
    inputs, _, overlays, fit = pool(3, 3)
    seen = []

    def recorder(x):
        seen.append(x.clone())
        return torch.full((len(x), CLASSES), 1.0 / CLASSES)

    strip(recorder, inputs, overlays, fit, StripOptions(n=5))
    blends = torch.cat(seen)
    assert len(blends) == 5 * (len(fit) + len(inputs))
    pool_blends = blends[5 * len(fit):].reshape(len(inputs), 5, *SHAPE)
    differences = (pool_blends - inputs[:, None]).flatten(2)
    # which overlay each blend holds: every blend is its input plus one of the held-out images
    gap = (differences[:, :, None] - overlays.flatten(1)[None, None]).abs().amax(-1)
    assert gap.min(-1).values.max() < 1e-6
    drawn = gap.argmin(-1)
    assert len({tuple(row.tolist()) for row in drawn}) == len(inputs)  # each input draws its own N


@pytest.mark.numerics  # batches of 7 and of 4096 blends may round the model's sums in another order
def test_deterministic_for_a_seed_and_independent_of_the_batch():
    inputs, _, overlays, fit = pool(10, 10)
    model = corner_trigger_classifier()
    first = strip(model, inputs, overlays, fit, StripOptions(n=20), seed=3)
    again = strip(model, inputs, overlays, fit, StripOptions(n=20, batch_images=7), seed=3)
    other = strip(model, inputs, overlays, fit, StripOptions(n=20), seed=4)
    assert np.array_equal(first.scores, strip(model, inputs, overlays, fit, StripOptions(n=20), seed=3).scores)
    assert np.allclose(first.scores, again.scores, atol=1e-5)
    assert np.isclose(first.info["threshold"], again.info["threshold"], atol=1e-5)
    assert not np.allclose(first.scores[:10], other.scores[:10])


def test_the_fit_entropies_are_computed_once_for_every_pool_of_a_memo():
    inputs, _, overlays, fit = pool(5, 5)
    model = corner_trigger_classifier()
    calls = []

    def counted(images):
        calls.append(len(images))
        return model(images)

    memo = {}
    first = strip(counted, inputs, overlays, fit, StripOptions(n=10), memo=memo)
    fit_and_pool = sum(calls)
    second = strip(counted, inputs[:6], overlays, fit, StripOptions(n=10), memo=memo)
    # the second pool costs its own 6 × 10 blends alone, and reads the same boundary
    assert fit_and_pool == 10 * (len(fit) + len(inputs)) and sum(calls) - fit_and_pool == 6 * 10
    assert second.info["threshold"] == first.info["threshold"]
    assert np.array_equal(second.scores, strip(model, inputs[:6], overlays, fit, StripOptions(n=10)).scores)


def test_the_pool_overlays_do_not_depend_on_the_fit_set():
    inputs, _, overlays, fit = pool(5, 5)
    model = corner_trigger_classifier()
    small = strip(model, inputs, overlays, fit[:10], StripOptions(n=10))
    large = strip(model, inputs, overlays, fit, StripOptions(n=10))
    assert np.allclose(small.scores, large.scores, atol=1e-6)


@pytest.mark.parametrize("field, value", [("n", 0), ("frr", 0.0), ("frr", 1.0), ("frr", float("nan")),
                                          ("threshold_rule", "median"), ("overlay_weight", 0.0),
                                          ("batch_images", 0), ("overlay_pool", 0), ("fit_samples", 1)])
def test_bad_parameters_name_themselves(field, value):
    with pytest.raises(ParameterError) as error:
        StripOptions(**{field: value})
    assert error.value.parameter == field


def test_bad_inputs_are_refused():
    inputs, _, overlays, fit = pool(2, 2)
    model = corner_trigger_classifier()
    with pytest.raises(ValueError, match="inputs must be images in \\[0, 1\\]"):
        strip(model, (inputs - 0.5) / 0.25, overlays, fit)
    with pytest.raises(ValueError, match="overlay_images must be float"):
        strip(model, inputs, (overlays * 255).to(torch.uint8), fit)
    with pytest.raises(ValueError, match="fit_images must hold at least 2"):
        strip(model, inputs, overlays, fit[:1])
    with pytest.raises(ValueError, match="same image shape"):
        strip(model, inputs, overlays[:, :, :4], fit)

    def logits(x):
        return torch.randn(len(x), CLASSES, generator=torch.Generator().manual_seed(0))

    with pytest.raises(ValueError, match="not logits"):
        strip(logits, inputs, overlays, fit)


def test_rates_and_the_registry_record():
    assert strip_rates([True, False, True, False], [True, True, False, False]) == {"frr": 0.5, "far": 0.5}
    assert strip_rates([True], [True]) == {"frr": None, "far": 0.0}
    assert STRIP.consumes == "inputs" and not STRIP.has_levels and STRIP.options is StripOptions
    assert "N = 100" in STRIP.describe(StripOptions())


def test_the_normal_threshold_below_every_entropy_is_recorded_and_the_empirical_rule_kept_beside_it():
    """Clean entropies spread evenly over [1, 2]: the fitted normal (μ 1.5, σ ≈ 0.29) puts its 1%
    quantile near 0.83, below every clean entropy and every inspected one, so the normal rule flags
    nothing; the empirical 1% quantile of the 101 clean entropies is their second, 1.01."""
    fit = np.linspace(1.0, 2.0, 101)
    pool_entropy = np.array([0.95, 1.0, 1.005, 1.02, 1.5, 2.0])
    truth = np.array([1, 1, 1, 0, 0, 0], bool)
    result = strip_decision(pool_entropy, fit, StripOptions(frr=0.01))
    assert result.info["normal_threshold"] == pytest.approx(1.5 - 2.3263 * np.std(fit), abs=1e-3)
    assert result.info["threshold_below_every_entropy"] and result.info["normal_threshold_below_every_fit_entropy"]
    assert not result.flagged.any() and result.info["threshold_rule"] == "normal"  # the headline rule is unchanged
    assert result.info["empirical_threshold"] == pytest.approx(1.01)
    assert set(result.variants) == {"normal", "empirical"}
    assert result.variants["empirical"].flagged.sum() == 3 and result.variants["empirical"].own_f1(truth) == 1.0
    assert result.variants["normal"].own_f1(truth) == 0.0 and result.auroc(truth) == 1.0
    # the flag is per pool: a pool holding an entropy under the boundary is flagged there, and not above it
    low = strip_decision(np.r_[0.5, pool_entropy], fit)
    assert not low.info["threshold_below_every_entropy"] and low.flagged.sum() == 1
    assert low.subset(np.arange(1, 7)).info["threshold_below_every_entropy"]
    assert not low.subset(np.array([0, 3])).info["threshold_below_every_entropy"]


def test_strip_records_both_rules_as_variants():
    inputs, truth, overlays, fit = pool()
    result = strip(corner_trigger_classifier(), inputs, overlays, fit)
    assert set(result.variants) == {"normal", "empirical"}
    for rule, variant in result.variants.items():
        assert np.array_equal(variant.flagged, result.decisions[rule])
    assert not result.info["threshold_below_every_entropy"] and result.auroc(truth) == 1.0
    assert result.info["forward_passes"] == 100 * (len(fit) + len(inputs)) and result.info["n_inputs"] == len(inputs)
