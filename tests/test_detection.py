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
    return {"ac": defenses.activation_clustering(features, clean_features=reference, seed=0),
            "ss": defenses.spectral_signatures(features, expected_fraction=truth.mean()),
            "sr": defenses.subspace_reconstruction(features, reference)}


@pytest.mark.parametrize("method", ["ac", "ss", "sr"])
def test_well_separated_clusters_are_detected(method):
    features, truth, reference = clusters(shift=15.0)
    result = run_all(features, truth, reference)[method]
    assert result.oracle_f1(truth) >= 0.95


@pytest.mark.parametrize("method", ["ac", "ss", "sr"])
def test_identical_distributions_give_near_chance(method):
    features, truth, reference = clusters(shift=0.0, n_benign=150, n_malicious=150)
    result = run_all(features, truth, reference)[method]
    # flagging everything already scores 2/3 at a 1:1 ratio; a real signal would approach 1
    assert result.oracle_f1(truth) < 0.8
    assert result.own_f1(truth) < 0.7


def test_own_rules():
    features, truth, reference = clusters(shift=15.0)
    ss = defenses.spectral_signatures(features, expected_fraction=1 / 3)
    # flagging 150 for 100 malicious caps F1 at 2·100/(150 + 100) = 0.8
    assert ss.flagged.sum() == 150 and 0.7 <= ss.own_f1(truth) <= 0.8
    ac = defenses.activation_clustering(features, decision="smaller")
    assert ac.flagged.sum() == min(ac.info["cluster_sizes"]) and ac.own_f1(truth) >= 0.95
    sr = defenses.subspace_reconstruction(features, reference)
    assert np.isclose(np.mean(sr.scores[~truth] > sr.info["threshold"]), 0.05, atol=0.05)
    assert sr.own_f1(truth) >= 0.9


def test_relative_size_rule_flags_nothing_for_balanced_clusters():
    features, truth, _ = clusters(shift=15.0, n_benign=150, n_malicious=150)
    ac = defenses.activation_clustering(features, decision="relative_size", size_threshold=0.35)
    assert ac.decision_f1(truth)["smaller"] >= 0.95 and "clean_reference" not in ac.decisions
    assert not ac.flagged.any() and ac.oracle_f1(truth) >= 0.95


def test_sr_uses_only_its_reference_for_the_subspace():
    features, truth, reference = clusters(shift=15.0)
    a = defenses.subspace_reconstruction(features, reference)
    b = defenses.subspace_reconstruction(features[::-1].copy(), reference)
    assert np.allclose(a.scores, b.scores[::-1]) and a.info == b.info  # the pool does not shape the subspace


def shifted_block(n_benign, n_malicious, seed, dim=256, shifted=8, shift=6.0):
    """Unit Gaussian rows; the malicious ones moved by 6σ in 8 of 256 dimensions; plus 200 clean
    reference rows (the defender's validation data)."""
    rng = np.random.default_rng(seed)
    malicious = rng.normal(size=(n_malicious, dim))
    malicious[:, :shifted] += shift
    features = np.vstack([rng.normal(size=(n_benign, dim)), malicious])
    truth = np.r_[np.zeros(n_benign, bool), np.ones(n_malicious, bool)]
    return features, truth, rng.normal(size=(200, dim))


@pytest.mark.parametrize("n_malicious", [150, 300])  # r′ = 0.5 and 1 against 300 benign rows
@pytest.mark.parametrize("seed", range(5))
def test_default_ac_finds_a_split_carrying_a_small_share_of_the_variance(n_malicious, seed):
    features, truth, reference = shifted_block(300, n_malicious, seed)
    ac = defenses.activation_clustering(features, clean_features=reference, seed=seed)
    assert ac.info["reduce"] == "pca" and ac.info["components"] == 10
    assert ac.own_f1(truth) >= 0.95  # the clean_reference rule picks the right cluster, even at r′ = 1


def test_clean_reference_rule_picks_the_cluster_away_from_clean_data():
    """Equal clusters: the size rules are a coin flip, the clean reference is not."""
    features, truth, reference = shifted_block(150, 150, seed=0)
    for flipped in (False, True):
        rows = slice(None, None, -1) if flipped else slice(None)
        ac = defenses.activation_clustering(features[rows], clean_features=reference)
        assert ac.own_f1(truth[rows]) == 1.0
        farther = int(np.argmax(ac.info["distance_to_clean"]))
        assert np.array_equal(ac.flagged, ac.labelings[farther])


def test_ac_paper_form_is_available():
    features, truth, reference = shifted_block(300, 150, seed=0)
    ac = defenses.activation_clustering(features, n_components=20, reduce="ica", clean_features=reference)
    assert ac.info == {**ac.info, "reduce": "ica", "components": 20}
    with pytest.raises(ValueError, match="needs clean_features"):
        defenses.activation_clustering(features)


def test_ss_own_rule_removes_one_and_a_half_epsilon_n():
    """r′ = 0.5 (ε = 1/3): the top 1.5·ε·N = N/2 scores hold all malicious rows, so F1 = 2·(N/3)/(N/2 + N/3) = 0.8."""
    features, truth, _ = shifted_block(300, 150, seed=0)
    for score in ("centred", "uncentred"):
        ss = defenses.spectral_signatures(features, expected_fraction=1 / 3, score=score)
        assert ss.flagged.sum() == 225 and ss.own_f1(truth) == pytest.approx(0.8)


def test_ss_scores_centred_and_uncentred():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)) + 5.0
    centred = features - features.mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][0]
    paper = defenses.spectral_signatures(features, 0.5, score="centred")
    code = defenses.spectral_signatures(features, 0.5, score="uncentred")
    assert np.allclose(paper.scores, (centred @ v) ** 2)
    assert np.allclose(code.scores, np.abs(features @ v))


def test_both_ss_score_forms_read_one_direction_the_top_right_singular_vector():
    """The protocol computes the SVD once per pool and hands it to both forms: their scores are
    the direct formulas' on that vector, bit for bit as when each form computed it."""
    from defenses.detectors.detection import SS_SCORES, top_singular_direction

    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 12))
    features[:10] += 2.0
    centred = features - features.mean(0, keepdims=True)
    top = np.linalg.svd(centred, full_matrices=False)[2][0]
    assert np.array_equal(top_singular_direction(features), top)
    expected = {"centred": (centred @ top) ** 2, "uncentred": np.abs(features @ top)}
    for score in SS_SCORES:
        shared = defenses.spectral_signatures(features, 1 / 6, score=score, direction=top)
        alone = defenses.spectral_signatures(features, 1 / 6, score=score)
        assert np.array_equal(shared.scores, expected[score]) and np.array_equal(alone.scores, expected[score])
        assert np.array_equal(shared.flagged, alone.flagged)


def test_every_scored_detection_records_its_auroc_beside_its_f1():
    """A detection of perfectly separable scores has AUROC 1 and the inverted one 0, whatever its
    rule flags; a clustering (AC) has no per-sample score and records None."""
    from evaluation.protocol import EvalOptions, score

    truth = np.r_[np.zeros(6, bool), np.ones(4, bool)]
    separable = np.r_[np.linspace(0.0, 1.0, 6), np.linspace(2.0, 3.0, 4)]
    nothing = np.zeros(len(truth), bool)
    for scores, expected in ((separable, 1.0), (-separable, 0.0)):
        record = score(defenses.DETECTORS["ss"], defenses.Detection(flagged=nothing, scores=scores), truth)
        assert record["auroc"] == expected and record["own"] == 0.0
    features, truth, reference = clusters(shift=15.0)
    inputs = defenses.DetectorInputs(features=features, protocol=EvalOptions(), expected_malicious=int(truth.sum()))
    ss = score(defenses.DETECTORS["ss"], defenses.DETECTORS["ss"].run(inputs, None, 0), truth)
    assert ss["auroc"] > 0.9 and set(ss["variants_auroc"]) == {"centred", "uncentred"}
    assert set(ss["variants"]["centred"]) == {"top_scores", "oracle"}  # the variants' keys stay F1 rules
    ac = score(defenses.DETECTORS["ac"], defenses.activation_clustering(features, clean_features=reference), truth)
    assert ac["auroc"] is None and ac["own"] > 0.95


def test_a_subset_recomputes_the_facts_that_depend_on_its_rows():
    detection = defenses.Detection(flagged=np.zeros(4, bool), scores=np.array([4.0, 3.0, 2.0, 1.0]),
                                   info={"kept": 1, "top": 4.0}, row_facts=lambda d: {"top": float(d.scores.max())})
    part = detection.subset(np.array([2, 3]))
    assert part.info == {"kept": 1, "top": 2.0} and detection.info["top"] == 4.0
    assert part.subset(np.array([1])).info["top"] == 1.0


def test_a_class_verdict_records_the_rank_of_the_targets_statistic():
    from defenses import ClassVerdict
    from evaluation.protocol import class_verdict

    truth = {"labels": np.array([0, 0, 1, 1, 2, 2]), "poisoned": np.array([0, 0, 0, 1, 0, 0], bool)}
    verdict = ClassVerdict(statistic={0: 9.0, 1: 4.0, 2: 4.0}, flagged_classes=[0], flagged=np.zeros(6, bool),
                           threshold=7.0)
    record = class_verdict(verdict, truth, target=1)
    assert (record["target_rank"], record["target_rank_ties"], record["n_classes"]) == (2, 1, 3)
    assert not record["target_flagged"] and record["others_flagged"] == [0]
    assert class_verdict(verdict, truth, target=0)["target_rank"] == 1
