import itertools

import numpy as np
import pytest

import metrics


def test_energy_distance_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(4, 3)) + 1
    dist = lambda a, b: float(np.linalg.norm(a - b))
    expected = (2 * np.mean([dist(a, b) for a in x for b in y]) - np.mean([dist(a, b) for a in x for b in x])
                - np.mean([dist(a, b) for a in y for b in y]))
    assert metrics.energy_distance2(x, y) == pytest.approx(expected, rel=1e-9)
    assert metrics.energy_distance2(x, x) == pytest.approx(0.0, abs=1e-12)


def test_metrics_mmd2_is_the_regularisers_gmk2():
    from regularizers import mmd2 as reg_mmd2
    import torch

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 5)), rng.normal(size=(7, 5)) + 0.5
    assert metrics.mmd2(x, y) == pytest.approx(float(reg_mmd2(torch.tensor(x).float(), torch.tensor(y).float())), rel=1e-5)


def test_swd1_of_a_set_with_itself_is_zero_and_of_a_shift_is_the_shift_in_1d():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 1))
    assert metrics.sliced_wasserstein1(x, x) == pytest.approx(0.0, abs=1e-9)
    # in 1-D every projection is ±1, so SWD₁ is W₁ = the shift
    assert metrics.sliced_wasserstein1(x, x + 1.5) == pytest.approx(1.5, rel=1e-6)


def test_swd1_matches_sorted_differences_in_1d():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 1)), rng.exponential(size=(50, 1))
    expected = np.mean(np.abs(np.sort(x[:, 0]) - np.sort(y[:, 0])))
    assert metrics.sliced_wasserstein1(x, y) == pytest.approx(expected, rel=1e-6)


def test_swd1_is_seeded():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 10)), rng.normal(size=(40, 10)) + 0.3
    assert metrics.sliced_wasserstein1(x, y, seed=5) == metrics.sliced_wasserstein1(x, y, seed=5)


def test_aro_of_hand_made_values():
    far = {"attack": 9.0, "intra": 1.0, "inter": 5.0}
    middle = {"attack": 3.0, "intra": 1.0, "inter": 5.0}
    near = {"attack": 0.5, "intra": 1.0, "inter": 5.0}
    assert metrics.aro({"mmd2": far, "ed2": far, "swd1": far}) == 3.0
    assert metrics.aro({"mmd2": far, "ed2": middle, "swd1": near}) == 2.0
    assert metrics.aro({"mmd2": near, "ed2": near, "swd1": middle}) == pytest.approx(4 / 3)
    assert metrics.ascending_rank(1.0, [1.0, 5.0]) == 1.5  # a tie shares the mean rank


def test_f1_helpers():
    assert metrics.f1_score([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / 3)
    assert metrics.best_f1_over_thresholds([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    # equal scores are cut together: flagging the tie {a, b} is the only option besides all
    assert metrics.best_f1_over_thresholds([1.0, 1.0, 0.0], [1, 0, 0]) == pytest.approx(2 / 3)
    for flags in itertools.product([0, 1], repeat=4):
        assert metrics.f1_score(flags, [1, 0, 1, 0]) <= 1.0
