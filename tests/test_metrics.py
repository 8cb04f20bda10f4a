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


def _pairwise_auroc(scores, positive):
    """The direct formula: the share of (malicious, benign) pairs the score orders right, ties half."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[positive] for n in scores[~positive]]
    return sum(pairs) / len(pairs)


def test_auroc_matches_the_pairwise_formula_with_ties():
    rng = np.random.default_rng(0)
    for size in (2, 3, 7, 20):
        for _ in range(25):
            scores = rng.integers(0, 4, size=size).astype(float)  # few values: many ties
            positive = rng.random(size) < 0.5
            if positive.all() or not positive.any():
                positive[0] = not positive[0]
            assert metrics.auroc(scores, positive) == pytest.approx(_pairwise_auroc(scores, positive))
    # by hand: pairs (2>0), (2>1), (1=1: half), (1>0) of four
    assert metrics.auroc([2.0, 1.0, 1.0, 0.0], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert metrics.auroc([5.0, 5.0, 5.0], [1, 0, 0]) == 0.5  # all tied: chance
    assert metrics.auroc([np.inf, 1.0, -np.inf], [1, 0, 0]) == 1.0


def test_auroc_of_separable_scores_and_where_it_is_undefined():
    truth = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    scores = np.r_[np.arange(5.0), 10 + np.arange(3.0)]
    assert metrics.auroc(scores, truth) == 1.0 and metrics.auroc(-scores, truth) == 0.0
    assert metrics.auroc([1.0, 2.0], [0, 0]) is None and metrics.auroc([1.0, 2.0], [1, 1]) is None
    assert metrics.auroc([np.nan, 2.0], [0, 1]) is None
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        metrics.auroc([1.0, 2.0, 3.0], [0, 1])


def test_target_rank_counts_the_classes_above_the_target():
    statistic = {0: 1.0, 1: 7.0, 2: 3.0, 3: 3.0, 4: float("nan")}
    assert metrics.target_rank(statistic, 1) == {"target_rank": 1, "target_rank_ties": 0, "n_classes": 5}
    assert metrics.target_rank(statistic, 2) == {"target_rank": 2, "target_rank_ties": 1, "n_classes": 5}
    assert metrics.target_rank(statistic, 0)["target_rank"] == 4  # a NaN class never ranks above it
    assert metrics.target_rank(statistic, 4)["target_rank"] is None
    assert metrics.target_rank({"0": 2.0, "1": 1.0}, 9)["target_rank"] is None  # no statistic for the target
