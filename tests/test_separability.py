"""The separability measure on Gaussian groups whose answer is known."""
import numpy as np
import pytest

from metrics.separability import separability
from utils.errors import ParameterError


def groups(shift: float, n_benign: int = 200, n_malicious: int = 200, dim: int = 20, seed: int = 0):
    """Unit Gaussian rows; the malicious ones moved by ``shift`` along the first axis."""
    rng = np.random.default_rng(seed)
    malicious = rng.normal(size=(n_malicious, dim))
    malicious[:, 0] += shift
    return rng.normal(size=(n_benign, dim)), malicious


@pytest.mark.parametrize("seed", range(3))
def test_well_separated_groups(seed):
    # 20σ apart: within-group distances ≈ √(2·20) ≈ 6.3, between ≈ √(40 + 400) ≈ 21, silhouette ≈ 0.7
    result = separability(*groups(20.0, seed=seed), seed=seed)
    assert result["svm_accuracy"] == 1.0 and result["svm_balanced_accuracy"] == 1.0
    assert result["silhouette"] > 0.5
    assert result["svm_folds"] == 5 and result["svm_converged"] and result["reason"] is None
    assert (result["n_benign"], result["n_malicious"], result["majority_rate"]) == (200, 200, 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_identical_distributions_are_at_chance(seed):
    result = separability(*groups(0.0, seed=seed), seed=seed)
    # With the groups drawn from one distribution, every held-out prediction is right with
    # probability exactly 1/2 (the features say nothing of the label), so the mean over the 400
    # held-out rows has a standard deviation of about √(0.25/400) = 0.025: 0.1 is 4 of them.
    assert abs(result["svm_accuracy"] - 0.5) < 0.1
    # Each row's silhouette compares two means of ~200 distances of one distribution; their
    # average over 400 rows stays within a few 1e-3 of 0 (measured ≤ 0.002 on these seeds).
    assert abs(result["silhouette"]) < 0.02


def test_cross_validation_is_why_the_dimension_cannot_fake_separability():
    """300 dimensions for 120 rows of one distribution: a linear SVM fits them perfectly, as the
    toolbox's training accuracy would report, but it predicts held-out rows at chance."""
    from sklearn.svm import LinearSVC

    benign, malicious = groups(0.0, 60, 60, dim=300)
    features, labels = np.vstack([benign, malicious]), np.r_[np.zeros(60), np.ones(60)]
    assert LinearSVC().fit(features, labels).score(features, labels) == 1.0
    # 120 held-out rows: standard deviation √(0.25/120) ≈ 0.046; 0.2 is over 4 of them
    assert abs(separability(benign, malicious)["svm_accuracy"] - 0.5) < 0.2


def test_unequal_groups_report_a_balanced_accuracy():
    same = separability(*groups(0.0, 300, 60))
    assert np.isclose(same["majority_rate"], 300 / 360)
    # the plain accuracy of an uninformed classifier drifts to the majority share; the balanced one stays near 1/2
    assert abs(same["svm_balanced_accuracy"] - 0.5) < 0.15
    apart = separability(*groups(20.0, 300, 60))
    assert apart["svm_accuracy"] == 1.0 and apart["svm_balanced_accuracy"] == 1.0


def test_small_groups():
    benign, malicious = groups(20.0, 3, 3)
    three = separability(benign, malicious)
    assert three["svm_folds"] == 3 and len(three["svm_fold_accuracies"]) == 3 and three["reason"] is None
    one = separability(benign, malicious[:1])
    assert one["svm_accuracy"] is None and "fewer than 2" in one["reason"] and one["silhouette"] is not None
    none = separability(benign, malicious[:0])
    assert none["svm_accuracy"] is None and none["silhouette"] is None and none["n_malicious"] == 0
    assert "no silhouette" in none["reason"]


def test_feature_maps_are_flattened_and_results_are_deterministic():
    benign, malicious = groups(1.0, 40, 40, dim=48)
    maps = separability(benign.reshape(40, 3, 4, 4), malicious.reshape(40, 3, 4, 4), seed=2)
    assert maps == separability(benign, malicious, seed=2)
    assert maps != separability(benign, malicious, seed=3)  # another seed shuffles other folds


@pytest.mark.parametrize("folds", [1, 0, 2.5, True])
def test_bad_fold_counts_name_the_parameter(folds):
    with pytest.raises(ParameterError) as error:
        separability(*groups(1.0, 10, 10), folds=folds)
    assert error.value.parameter == "folds"


def test_bad_features_are_refused():
    benign, malicious = groups(1.0, 10, 10)
    with pytest.raises(ValueError, match="dimension"):
        separability(benign, malicious[:, :5])
    malicious[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        separability(benign, malicious)
