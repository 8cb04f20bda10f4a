"""AC, SS and SR on synthetic Gaussian clusters with known answers."""
import numpy as np
import pytest

import defenses


def clusters(shift: float, n_benign=200, n_malicious=100, dim=10, rank=3, seed=0):
    """Benign features near a rank-3 subspace (as representations are), malicious ones the same
    distribution moved ``shift`` along a random direction; plus a held-out clean reference."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, dim))
    draw = lambda n: rng.normal(size=(n, rank)) @ basis + 0.1 * rng.normal(size=(n, dim))
    direction = rng.normal(size=dim)
    malicious = draw(n_malicious) + shift * direction / np.linalg.norm(direction)
    truth = np.r_[np.zeros(n_benign, bool), np.ones(n_malicious, bool)]
    return np.vstack([draw(n_benign), malicious]), truth, draw(200)


def run_all(features, truth, reference):
    return {"ac": defenses.activation_clustering(features, n_components=20, seed=0),
            "ss": defenses.spectral_signatures(features, expected_fraction=truth.mean()),
            "sr": defenses.subspace_reconstruction(features, reference)}


@pytest.mark.parametrize("method", ["ac", "ss", "sr"])
def test_well_separated_clusters_are_detected(method):
    features, truth, reference = clusters(shift=15.0)
    result = run_all(features, truth, reference)[method]
    assert result.best_f1(truth) >= 0.95


@pytest.mark.parametrize("method", ["ac", "ss", "sr"])
def test_identical_distributions_give_near_chance(method):
    features, truth, reference = clusters(shift=0.0, n_benign=150, n_malicious=150)
    result = run_all(features, truth, reference)[method]
    # flagging everything already scores 2/3 at a 1:1 ratio; a real signal would approach 1
    assert result.best_f1(truth) < 0.8
    assert result.own_f1(truth) < 0.7


def test_own_rules():
    features, truth, reference = clusters(shift=15.0)
    ss = defenses.spectral_signatures(features, expected_fraction=1 / 3)
    # flagging 150 for 100 malicious caps F1 at 2·100/(150 + 100) = 0.8
    assert ss.flagged.sum() == 150 and 0.7 <= ss.own_f1(truth) <= 0.8
    ac = defenses.activation_clustering(features)
    assert ac.flagged.sum() == min(ac.info["cluster_sizes"]) and ac.own_f1(truth) >= 0.95
    sr = defenses.subspace_reconstruction(features, reference)
    assert np.isclose(np.mean(sr.scores[~truth] > sr.info["threshold"]), 0.05, atol=0.05)
    assert sr.own_f1(truth) >= 0.9


def test_relative_size_rule_flags_nothing_for_balanced_clusters():
    features, truth, _ = clusters(shift=15.0, n_benign=150, n_malicious=150)
    ac = defenses.activation_clustering(features, decision="relative_size", size_threshold=0.35)
    assert not ac.flagged.any() and ac.best_f1(truth) >= 0.95


def test_sr_uses_only_its_reference_for_the_subspace():
    features, truth, reference = clusters(shift=15.0)
    a = defenses.subspace_reconstruction(features, reference)
    b = defenses.subspace_reconstruction(features[::-1].copy(), reference)
    assert np.allclose(a.scores, b.scores[::-1]) and a.info == b.info  # the pool does not shape the subspace
