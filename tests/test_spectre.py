"""SPECTRE (defenses/detectors/spectre.py) on synthetic pools with known answers, against plain SS and random flags."""
import numpy as np
import pytest
from scipy.linalg import expm

from defenses.detectors.detection import spectral_signatures
from defenses.detectors.detector import DetectorInputs
from defenses.detectors.spectre import (SPECTRE, SpectreOptions, _fourth_moment_direction_dual,
                              _fourth_moment_direction_primal, que_matrix, robust_covariance_selection, spectre)
from metrics.f1 import f1_score
from utils.errors import ParameterError

N_BENIGN, N_POISON, DIM, NUISANCE = 400, 20, 40, 3


def planted(shift: float, seed: int, n_benign=N_BENIGN, n_poison=N_POISON):
    """SPECTRE's regime: a small population (5% of the pool) shifted `shift` standard deviations
    along a low-variance direction of benign features that have NUISANCE directions of standard
    deviation 5 (variance 25). The shift adds about ε(1 − ε)·shift² ≈ 3 to the variance along its
    direction, far below 25, so the pool's top singular vector, all plain SS looks at, lies in the
    nuisance directions. Returns (features, truth, nuisance basis)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    scales = np.ones(DIM)
    scales[:NUISANCE] = 5.0
    draw = lambda n: (rng.normal(size=(n, DIM)) * scales) @ rotation.T
    features = np.vstack([draw(n_benign), draw(n_poison) + shift * rotation[:, -1]])
    truth = np.r_[np.zeros(n_benign, bool), np.ones(n_poison, bool)]
    return features, truth, rotation[:, :NUISANCE]


def random_flags(truth, count: int, seed: int) -> np.ndarray:
    flags = np.zeros(len(truth), bool)
    flags[np.random.default_rng(seed).choice(len(truth), count, replace=False)] = True
    return flags


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1])
def test_catches_a_low_energy_population_that_plain_ss_misses(seed):
    features, truth, nuisance = planted(shift=8.0, seed=seed)
    centred = features - features.mean(0)
    top = np.linalg.svd(centred, full_matrices=False)[2][0]
    assert np.linalg.norm(nuisance.T @ top) > 0.9  # the premise: SS's direction is a nuisance one

    result = spectre(features, N_POISON)
    ss = spectral_signatures(features, truth.mean(), 1.5)
    flagged = round(1.5 * N_POISON)
    assert result.flagged.sum() == flagged == result.info["flagged_count"]
    # removing 1.5ε for ε malicious caps the own F1 at 2ε/2.5ε = 0.8: every malicious one caught
    assert result.own_f1(truth) >= 0.75 and result.oracle_f1(truth) >= 0.95
    assert ss.own_f1(truth) <= 0.25 and ss.oracle_f1(truth) <= 0.3
    assert f1_score(random_flags(truth, flagged, seed), truth) <= 0.25
    # SPECTRE at k = 1 is SS; the whitening at k > 1 is what finds the population
    assert result.info["chosen_k"] > 1 and result.decision_f1(truth)["k=1"] <= 0.25


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1])
def test_without_a_planted_population_it_flags_at_chance(seed):
    features, truth, _ = planted(shift=0.0, seed=seed)
    result = spectre(features, N_POISON)
    # random flags of 30 among 420 with 20 positives score F1 ≈ 0.06 on average
    assert result.own_f1(truth) <= 0.25 and result.oracle_f1(truth) <= 0.35


def test_k_equal_one_is_the_spectral_signature():
    """The reference's k = 1: no whitening, M = [1], τ = the squared centred first principal
    coordinate, Tran et al.'s score; removing round(1.5ε) of them is SS's own rule."""
    features, _, _ = planted(shift=8.0, seed=2)
    result = spectre(features, N_POISON, SpectreOptions(pca_dims=1))
    ss = spectral_signatures(features, N_POISON / len(features), 1.5)
    assert result.info["k_grid"] == [1] and result.info["chosen_k"] == 1
    np.testing.assert_allclose(result.scores, ss.scores, rtol=1e-8, atol=1e-8 * ss.scores.max())
    assert (result.flagged == ss.flagged).all()


def test_que_uses_the_matrix_exponential():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(6, 6))
    white_covariance = factor @ factor.T / 6 + np.eye(6)
    weighting, spectral_norm = que_matrix(white_covariance, alpha=4.0)
    exponent = 4.0 * (white_covariance - np.eye(6)) / (np.linalg.norm(white_covariance, 2) - 1)
    expected = expm(exponent) / np.trace(expm(exponent))
    np.testing.assert_allclose(weighting, expected, rtol=1e-9, atol=1e-12)
    assert spectral_norm == pytest.approx(np.linalg.eigvalsh(white_covariance)[-1])
    # the public Python ports exponentiate entrywise, which is another matrix altogether
    entrywise = np.exp(exponent) / np.trace(np.exp(exponent))
    assert np.abs(weighting - entrywise).max() > 0.01


def test_fourth_moment_direction_is_the_same_from_either_side():
    """The k²×k² operator of dkk17.jl and the n×n matrix with the same non-zero spectrum agree."""
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(60, 5)) * [1, 1, 1, 2, 3]
    samples[:6] += 4.0
    eigenvalues, eigenvectors = np.linalg.eigh(samples.T @ samples / len(samples))
    white = samples @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
    value_primal, matrix_primal = _fourth_moment_direction_primal(white)
    value_dual, matrix_dual = _fourth_moment_direction_dual(white)
    assert value_dual == pytest.approx(value_primal, rel=1e-9)
    sign = np.sign((matrix_primal * matrix_dual).sum())
    np.testing.assert_allclose(sign * matrix_dual, matrix_primal, atol=1e-8)
    assert np.linalg.norm(matrix_dual) == pytest.approx(1.0)


@pytest.mark.numerics
def test_robust_covariance_filter_removes_a_covariance_outlier_population():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(300, 5))
    samples[:15, 0] = rng.choice([-1, 1], 15) * rng.uniform(5, 7, 15)  # a heavy tail along one axis
    samples -= samples.mean(0)
    selected, facts = robust_covariance_selection(samples, 15 / 300, 0.1, limit=30)
    removed = ~selected
    assert facts["removed"] == removed.sum() <= 30
    assert removed[:15].sum() >= 13 and removed[15:].sum() <= 5


def test_small_pools_at_ratio_one_cap_the_dimensions():
    """N = 100 at r′ = 1 (ε = 50, as the evaluation's smallest pool): 1.5ε = 75 removed, so the kept
    25 samples can whiten at most 24 dimensions; the filter's 2ε = 100 is capped at N − k − 1."""
    features, _, _ = planted(shift=8.0, seed=0, n_benign=50, n_poison=50)
    result = spectre(features, 50)
    assert result.info["pca_dims"] == 24 and result.info["k_grid"] == [1, 4, 9, 16]
    assert result.flagged.sum() == 75
    for k, facts in result.info["robust_filter"].items():
        assert facts["removed"] <= 100 - int(k) - 1
    assert np.isfinite(result.scores).all()
    assert all(np.isfinite(value) for value in result.info["selection_statistic"].values())


def test_dimensions_are_capped_at_the_pools_rank():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 7)) @ rng.normal(size=(7, 30))  # rank 7 in 30 dimensions
    result = spectre(features, 10)
    assert result.info["pca_dims"] == 7 and result.info["k_grid"] == [1, 4]
    assert np.isfinite(result.scores).all()


def test_deterministic_and_independent_of_the_seed():
    features, _, _ = planted(shift=8.0, seed=3)
    first, again, other = (spectre(features, N_POISON, seed=seed) for seed in (0, 0, 5))
    for result in (again, other):
        assert (result.flagged == first.flagged).all() and (result.scores == first.scores).all()
        assert result.info == first.info


def test_registered_record_runs_on_detector_inputs():
    features, _, _ = planted(shift=8.0, seed=0)
    inputs = DetectorInputs(features=features, expected_malicious=N_POISON)
    via_record = SPECTRE.run(inputs, None, 0)
    assert (via_record.flagged == spectre(features, N_POISON).flagged).all()
    assert SPECTRE.consumes == "pool" and "oracle" in SPECTRE.describe(SpectreOptions())


@pytest.mark.parametrize("field, value", [("pca_dims", 0), ("alpha", 0.0), ("alpha", float("nan")), ("tau", 0.0),
                                          ("tau", 1.0), ("filter_limit_factor", -1.0), ("removal_factor", 0.0)])
def test_bad_options_name_the_parameter(field, value):
    with pytest.raises(ParameterError) as error:
        SpectreOptions(**{field: value})
    assert error.value.parameter == field


@pytest.mark.parametrize("count", [0, -3, 2.5, True, 79])
def test_bad_poison_counts_name_the_parameter(count):
    features = np.random.default_rng(0).normal(size=(80, 5))
    with pytest.raises(ParameterError) as error:
        spectre(features, count)  # 79 × 1.5 would remove more than the pool
    assert error.value.parameter == "poison_count"
