"""SCAn (defenses/detectors/scan.py) on synthetic classes whose answer is known."""
import json

import numpy as np
import pytest

from defenses.detectors.scan import (IDENTITY_ESTIMATES, ScanOptions, anomaly_index, find_split, global_model, identity_of,
                           scan, split_statistic)
from metrics.f1 import f1_score
from utils.errors import ParameterError


def planted_classes(planted: str = "none", seed: int = 0, dim: int = 16, n_classes: int = 10, per_class: int = 100,
                    reserve: int = 50, planted_count: int = 40, shift: float = 2.0, first_class_count: int = None):
    """Ten classes sharing one within-class covariance (unit variance in dim − 1 directions, std
    0.1 in the last, a direction clean features barely use: a would-be trigger feature) with class
    means 3σ apart; the clean reserve is drawn from the same classes.

    ``planted`` adds ``planted_count`` samples labelled 0 (the poisoned ones): ``quiet_shift``,
    class 0's distribution moved by ``shift`` (20 clean std) along the quiet direction;
    ``other_class``, class 3's distribution (a sub-population the clean classes' span contains).
    ``first_class_count`` draws that many clean samples of class 0 instead of ``per_class``."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.normal(size=(n_classes, dim))
    means[:, -1] = 0.0

    def draw(label, count):
        rows = rng.normal(size=(count, dim))
        rows[:, -1] *= 0.1
        return rows + means[label]

    counts = [first_class_count or per_class] + [per_class] * (n_classes - 1)
    features = [draw(k, count) for k, count in enumerate(counts)]
    labels = [np.full(count, k) for k, count in enumerate(counts)]
    if planted != "none":
        rows = draw(3, planted_count) if planted == "other_class" else draw(0, planted_count)
        if planted == "quiet_shift":
            rows[:, -1] += shift
        features.append(rows)
        labels.append(np.zeros(planted_count, dtype=int))
    poisoned = np.r_[np.zeros(sum(counts), bool), np.ones(planted_count if planted != "none" else 0, bool)]
    clean = np.vstack([draw(k, reserve) for k in range(n_classes)])
    return np.vstack(features), np.concatenate(labels), clean, np.repeat(np.arange(n_classes), reserve), poisoned


# Three seeds keep the file fast. Over 20 seeds of this design (docs/detectors/scan.md) the
# default flags class 0, and only it, in 20/20 runs with the quiet-shift population (per-sample
# F1 1.0 each time) and flags nothing in 20/20 runs without one; with the other-class population
# the reference estimate flags nothing in 20/20 and the posterior mean class 0 alone in 20/20.
SEEDS = (0, 1, 2)


@pytest.mark.numerics
@pytest.mark.parametrize("seed", SEEDS)
def test_flags_only_the_class_holding_a_planted_population(seed):
    features, labels, clean, clean_labels, poisoned = planted_classes("quiet_shift", seed)
    result = scan(features, labels, clean, clean_labels, seed=seed)
    assert result.flagged_classes == [0]
    assert result.anomaly_index[0] > 50 and np.all(result.anomaly_index[1:] < 5)
    in_class = labels == 0
    assert f1_score(result.flagged[in_class], poisoned[in_class]) >= 0.95
    assert not result.flagged[~in_class].any()
    assert result.f1_in_class(0, poisoned)["own"] >= 0.95


@pytest.mark.numerics
@pytest.mark.parametrize("seed", SEEDS)
def test_flags_nothing_without_a_planted_population(seed):
    features, labels, clean, clean_labels, _ = planted_classes("none", seed)
    result = scan(features, labels, clean, clean_labels, seed=seed)
    assert result.flagged_classes == [] and not result.flagged.any()
    assert np.all(result.anomaly_index < np.exp(2))


@pytest.mark.numerics
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_estimate_misses_a_population_the_posterior_mean_finds(seed):
    """A sub-population drawn from another class's distribution: the posterior mean of the
    identity (build_global_model's formula) flags class 0 alone and splits it exactly; the
    reference's calc_test formula does not flag it, because its statistic adds to the split's
    likelihood gain a term ‖x̄ − μ‖²_F that depends on where the class mean lies and swamps it."""
    features, labels, clean, clean_labels, poisoned = planted_classes("other_class", seed)
    posterior = scan(features, labels, clean, clean_labels, ScanOptions(identity_estimate="posterior_mean"), seed)
    assert posterior.flagged_classes == [0]
    assert posterior.f1_in_class(0, poisoned)["own"] >= 0.95
    reference = scan(features, labels, clean, clean_labels, seed=seed)
    assert 0 not in reference.flagged_classes
    # both estimates are always computed on the same split; the headline follows the option
    assert np.array_equal(reference.anomaly_index_by_estimate["posterior_mean"], posterior.anomaly_index)
    assert reference.f1_in_class(0, poisoned)["oracle"] >= 0.95


@pytest.mark.numerics
def test_reference_estimate_flags_a_class_for_its_size_alone():
    """No sample is poisoned, but class 0 holds three times as many samples, in 64 dimensions.
    Along the 64 − 9 directions that ten clean class means cannot span, Su is 0 and the
    reference's identity estimate is the class sum Σx itself, so its statistic grows with the
    class's size; the posterior mean is 0 there. Over ten seeds the reference flags class 0
    every time and the posterior mean almost never (20/20 and 1/20 over twenty seeds; at twice
    the size, as the target class is at poison_ratio 0.1 in 'add' mode, 14/20 and 0/20)."""
    reference_flags = posterior_flags = 0
    for seed in range(10):
        features, labels, clean, clean_labels, poisoned = planted_classes("none", seed, dim=64, first_class_count=300)
        assert not poisoned.any()
        result = scan(features, labels, clean, clean_labels, seed=seed)
        reference_flags += result.flagged_classes == [0]
        posterior_flags += bool(result.anomaly_index_by_estimate["posterior_mean"][0] > np.exp(2))
    assert reference_flags == 10 and posterior_flags <= 1


@pytest.mark.numerics
def test_subgroup_rules_when_the_poison_is_the_majority_of_its_class():
    """150 planted against 100 clean samples of class 0 (as at poison_ratio 0.1 in 'add' mode):
    the subgroup holding fewer clean-reserve samples is the poison; the smaller one is not."""
    features, labels, clean, clean_labels, poisoned = planted_classes("quiet_shift", 0, planted_count=150)
    result = scan(features, labels, clean, clean_labels, seed=0)
    assert result.flagged_classes == [0]
    in_class = labels == 0
    assert f1_score(result.decisions["fewer_clean"][in_class], poisoned[in_class]) >= 0.95
    assert f1_score(result.decisions["smaller"][in_class], poisoned[in_class]) == 0.0
    assert np.array_equal(result.flagged, result.decisions["fewer_clean"])
    sizes = result.subgroup_sizes[0]
    picked = result.poison_subgroup[0]
    assert sizes["clean"][picked] < sizes["clean"][1 - picked] and sizes["inspected"][picked] >= 140
    smaller = scan(features, labels, clean, clean_labels, ScanOptions(poison_group="smaller"), seed=0)
    assert np.array_equal(smaller.flagged, result.decisions["smaller"])


@pytest.mark.numerics
@pytest.mark.parametrize("fit", ["clean", "inspected_and_clean"])
def test_reduced_dimension_keeps_the_answer(fit):
    """The same classes embedded in 256 dimensions (plus faint noise): PCA to 64 first."""
    features, labels, clean, clean_labels, poisoned = planted_classes("quiet_shift", 0)
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(256, 16)))[0].T
    embed = lambda rows: rows @ basis + 1e-3 * rng.normal(size=(len(rows), 256))  # noqa: E731
    result = scan(embed(features), labels, embed(clean), clean_labels, ScanOptions(reduce_fit=fit), seed=0)
    assert result.info["reduced"] and result.info["reduced_dim"] == 64 and result.info["dim"] == 256
    assert result.info["reduce_fit"] == fit
    assert result.flagged_classes == [0]
    assert result.f1_in_class(0, poisoned)["own"] >= 0.95


@pytest.mark.numerics
def test_global_model_recovers_the_covariances():
    """Data drawn from SCAn's own model, r = μ + ε with μ ~ N(0, Su), ε ~ N(0, Se): the EM
    recovers both (the class means' covariance alone would overstate Su by Se/n)."""
    rng = np.random.default_rng(0)
    classes, per_class = 200, 20
    su, se = np.diag([4.0, 1.0, 0.25]), np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]])
    labels = np.repeat(np.arange(classes), per_class)
    features = rng.multivariate_normal(np.zeros(3), su, size=classes)[labels]
    features += rng.multivariate_normal(np.zeros(3), se, size=len(labels))
    model = global_model(features, labels, np.arange(classes), max_iterations=100, tolerance=1e-6)
    assert model["converged"]
    np.testing.assert_allclose(model["Su"], su, atol=0.2, rtol=0.1)
    np.testing.assert_allclose(model["Se"], se, atol=0.1)


def test_statistic_is_the_likelihood_gain_of_two_identities():
    """calc_test's sum equals ‖x̄ − μ‖²_F + (n₁n₂/N²)‖u₁ − u₂‖²_F whenever u₁, u₂ are the
    subgroup means; and the posterior-mean estimate equals Su(N·Su + Se)⁻¹Σx."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(30, 4)) + np.r_[np.zeros((20, 4)), np.full((10, 4), 3.0)]
    a = rng.normal(size=(4, 4))
    se, su = a @ a.T + np.eye(4), np.diag([2.0, 1.0, 0.5, 0.0])
    f = np.linalg.inv(se)
    ones = np.r_[np.zeros(20, bool), np.ones(10, bool)]
    mean_one, mean_zero = rows[ones].mean(0), rows[~ones].mean(0)
    centre = rows.mean(0)
    for estimate in IDENTITY_ESTIMATES:
        mu = identity_of(rows, su, se, f, estimate)
        expected = (centre - mu) @ f @ (centre - mu) + (10 * 20 / 30 ** 2) * (mean_one - mean_zero) @ f @ (
            mean_one - mean_zero)
        assert split_statistic(rows, ones, mean_one, mean_zero, mu, f) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(identity_of(rows, su, se, f, "posterior_mean"),
                               su @ np.linalg.inv(30 * su + se) @ rows.sum(0), atol=1e-10)
    np.testing.assert_allclose(identity_of(rows, su, se, f, "reference"),
                               se @ np.linalg.inv(30 * su + se) @ rows.sum(0), atol=1e-10)


def test_split_separates_two_clusters_and_handles_one_sample():
    rng = np.random.default_rng(0)
    rows = np.r_[rng.normal(size=(40, 3)), rng.normal(size=(20, 3)) + 8.0]
    ones, mean_one, mean_zero = find_split(rows, np.eye(3), np.random.default_rng(0), 100)
    truth = np.r_[np.zeros(40, bool), np.ones(20, bool)]
    assert np.array_equal(ones, truth) or np.array_equal(ones, ~truth)
    np.testing.assert_allclose(mean_one, rows[ones].mean(0))
    single, first, second = find_split(rows[:1], np.eye(3), np.random.default_rng(0), 100)
    assert not single.any() and np.array_equal(first, rows[0]) and np.array_equal(second, rows[0])


def test_anomaly_index():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 10.0, 0.2])
    index = anomaly_index(values)
    normalised = values / values.max()
    mad = 1.4826 * np.median(np.abs(normalised - np.median(normalised)))
    np.testing.assert_allclose(index, np.abs(normalised - np.median(normalised)) / mad)
    upper = anomaly_index(values, "upper")
    assert upper[-1] == 0.0 and upper[6] == index[6]
    # a MAD of 0: the off-median class is infinitely anomalous instead of a division by zero
    assert anomaly_index(np.array([1.0, 1.0, 1.0, 5.0])).tolist() == [0.0, 0.0, 0.0, np.inf]


def test_deterministic_and_json():
    features, labels, clean, clean_labels, _ = planted_classes("quiet_shift", 0)
    first = scan(features, labels, clean, clean_labels, seed=7)
    second = scan(features, labels, clean, clean_labels, seed=7)
    assert np.array_equal(first.subgroup, second.subgroup) and np.array_equal(first.statistic, second.statistic)
    record = json.loads(json.dumps(first.to_dict()))
    assert record["flagged_classes"] == [0] and record["threshold"] == pytest.approx(np.exp(2))
    assert len(record["flagged_indices"]) == int(first.flagged.sum()) and set(record["anomaly_index"]) == set(
        map(str, range(10)))


def test_the_record_says_what_every_variant_flags_and_which_the_verdict_reads():
    """Both identity estimates' J at both thresholds: the classes each would flag, and the one the
    verdict (flagged_classes) follows, named."""
    features, labels, clean, clean_labels, _ = planted_classes("other_class", 0)
    for estimate in IDENTITY_ESTIMATES:
        for threshold in ("e2", "e"):
            result = scan(features, labels, clean, clean_labels, ScanOptions(identity_estimate=estimate,
                                                                            threshold=threshold))
            variants = result.info["flagged_by_variant"]
            assert result.info["verdict_reads"] == f"{estimate}/{threshold}"
            assert variants[f"{estimate}/{threshold}"] == result.flagged_classes
            for name, values in result.anomaly_index_by_estimate.items():
                for rule, bound in (("e2", np.exp(2)), ("e", np.e)):
                    assert variants[f"{name}/{rule}"] == [c for c, v in zip(result.classes, values) if v > bound]
    # the two estimates disagree here (tests above): the record shows both
    assert variants["posterior_mean/e2"] == [0] and 0 not in variants["reference/e2"]
    verdict = json.loads(json.dumps(result.to_verdict().to_dict()))
    assert verdict["verdict_reads"] == "posterior_mean/e" and set(verdict["flagged_by_variant"]) == {
        "reference/e2", "reference/e", "posterior_mean/e2", "posterior_mean/e"}


def test_to_verdict():
    pytest.importorskip("defenses.detectors.detector")
    features, labels, clean, clean_labels, _ = planted_classes("quiet_shift", 0)
    verdict = scan(features, labels, clean, clean_labels).to_verdict()
    assert verdict.flagged_classes == [0] and verdict.statistic[0] > 50
    json.dumps(verdict.to_dict())


@pytest.mark.parametrize("name, value", [("threshold", "e3"), ("em_max_iterations", 0), ("em_tolerance", 0.0),
                                         ("em_tolerance", float("nan")), ("split_max_steps", 0), ("reduce_dim", -1),
                                         ("reduce_fit", "test"), ("identity_estimate", "map"),
                                         ("poison_group", "larger"), ("anomaly_side", "lower")])
def test_bad_parameters_are_named(name, value):
    with pytest.raises(ParameterError) as error:
        ScanOptions(**{name: value})
    assert error.value.parameter == name


def test_bad_inputs():
    features, labels, clean, clean_labels, _ = planted_classes("none", 0)
    keep = clean_labels != 4
    with pytest.raises(ValueError, match="absent from the clean reserve"):
        scan(features, labels, clean[keep], clean_labels[keep])
    with pytest.raises(ValueError, match="dimensions"):
        scan(features[:, :8], labels, clean, clean_labels)
    with pytest.raises(ValueError, match="entries"):
        scan(features, labels[:-1], clean, clean_labels)
    with pytest.raises(ValueError, match="non-finite"):
        scan(np.full_like(features, np.nan), labels, clean, clean_labels)
