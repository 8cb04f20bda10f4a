"""The seed as the unit (issue 45): one statistic per seed, then a t-interval over the seeds; a
verdict stands only where the interval clears the margin."""
import numpy as np
import pytest
from scipy.stats import t

from metrics.intervals import per_seed_means, seed_interval, seed_verdict


def test_cells_of_a_seed_are_averaged_before_the_interval():
    cases = [(0, 0.2), (0, 0.4), (1, 0.5), (1, None), (2, 0.1), (3, float("nan"))]
    assert per_seed_means(cases) == {0: pytest.approx(0.3), 1: 0.5, 2: 0.1}


def test_the_interval_is_students_t_over_the_seeds():
    values = {0: 0.30, 1: 0.42, 2: 0.36, 3: 0.33, 4: 0.39}
    found = seed_interval(values)
    sample = np.array(list(values.values()))
    half = t.ppf(0.975, 4) * sample.std(ddof=1) / np.sqrt(5)
    assert found["interval"] == pytest.approx((sample.mean() - half, sample.mean() + half))
    assert found["seeds"] == 5 and found["degenerate"] is None


def test_a_verdict_that_clears_the_margin_passes_and_one_that_does_not_is_not_established():
    assert seed_verdict({0: 0.30, 1: 0.42, 2: 0.36, 3: 0.33, 4: 0.39}, 0.1, "lowered", "raised")["verdict"] == "lowered"
    assert seed_verdict({0: -0.30, 1: -0.42, 2: -0.36}, 0.1, "lowered", "raised")["verdict"] == "raised"
    # C7's case: a mean beyond the margin whose interval still crosses it
    found = seed_verdict({0: -0.44, 1: 0.21, 2: -0.30}, 0.1, "harder", "easier")
    assert found["verdict"] == "not established on 3 seeds" and "does not clear" in found["reason"]


def test_too_few_seeds_carry_no_verdict():
    found = seed_verdict({0: 0.5, 1: 0.6}, 0.1, "lowered", "raised")
    assert found["verdict"] == "not established on 2 seeds" and found["reason"] == "fewer than 3 seeds"
    assert seed_interval({0: 0.5})["degenerate"].startswith("1 seed:")


def test_a_degenerate_interval_is_printed_with_its_reason_and_decides_nothing():
    found = seed_verdict({0: -0.1, 1: -0.1, 2: -0.1}, 0.05, "more", "less")
    assert found["interval"] == (-0.1, -0.1) and found["verdict"] == "not established on 3 seeds"
    assert "zero-width" in found["reason"] and "-0.100" in found["reason"]


def test_the_paired_rule_averages_each_seeds_cells_before_its_interval():
    from metrics.intervals import paired_verdict

    # two cells per seed: the interval is over the three seed means, not over the six cells
    cases = [(0, 0.30), (0, 0.34), (1, 0.40), (1, 0.36), (2, 0.33), (2, 0.29)]
    found = paired_verdict(cases, 0.1, 3, "lowered", "raised", "not lowered")
    assert found["verdict"] == "lowered" and found["seeds"] == 3 and found["cases"] == 6
    assert found["interval"] == pytest.approx(seed_interval({0: 0.32, 1: 0.38, 2: 0.31})["interval"])
    assert paired_verdict([(s, -d) for s, d in cases], 0.1, 3, "lowered", "raised")["verdict"] == "raised"


def test_the_paired_rule_inside_the_margin_says_neither_and_a_straddling_interval_decides_nothing():
    from metrics.intervals import paired_verdict

    inside = paired_verdict([(0, 0.03), (1, 0.05), (2, 0.04)], 0.1, 3, "lowered", "raised", "not lowered")
    assert inside["verdict"] == "not lowered" and "not around 0" in inside["reason"]
    straddling = paired_verdict([(0, 0.3), (1, -0.2), (2, 0.25)], 0.1, 3, "lowered", "raised", "not lowered")
    assert straddling["verdict"] == "not established on 3 seeds" and "does not clear" in straddling["reason"]


def test_the_paired_rule_with_too_few_cases_too_few_seeds_or_a_degenerate_interval():
    from metrics.intervals import NOT_MEASURABLE, paired_verdict

    assert paired_verdict([(0, 0.2), (1, 0.3)], 0.1, 3, "up", "down")["verdict"] == NOT_MEASURABLE
    few = paired_verdict([(0, 0.5), (0, 0.6), (1, 0.55)], 0.1, 3, "up", "down")
    assert few["verdict"] == "not established on 2 seeds" and few["reason"] == "fewer than 3 seeds"
    flat = paired_verdict([(0, -0.1), (1, -0.1), (2, -0.1)], 0.05, 3, "up", "down")
    assert flat["verdict"] == "not established on 3 seeds" and "zero-width" in flat["reason"]


def test_a_share_or_threshold_rules_verdict_stands_only_where_its_seed_interval_lies_on_its_side():
    """experiments.claim.seed_checked, the seed check of C1 and C3–C6: a case that passes, one that
    fails, one with too few seeds, and zero-width intervals on and off the verdict's side."""
    from experiments.claim import seed_checked
    from experiments.spread import spread_of

    def spread(per_seed_cases):
        return spread_of(per_seed_cases, "drop", "≥ 0.1", 0.1)

    passes = spread({0: [0.30, 0.34], 1: [0.36], 2: [0.31, 0.29]})
    assert seed_checked("reproduced", ("≥", 0.1), passes) == "reproduced"
    fails = spread({0: [0.5], 1: [0.45], 2: [0.05]})  # C4's seeds-disagree case: the interval reaches below 0.1
    assert seed_checked("reproduced", ("≥", 0.1), fails).startswith(
        "not established on 3 seeds (the rule on the pooled runs: reproduced; the t-interval [")
    assert seed_checked("reproduced", ("≥", 0.1), spread({0: [0.3], 1: [0.4]})) == (
        "not established on 2 seeds (the rule on the pooled runs: reproduced; fewer than 3 seeds)")
    on_side = spread({0: [1.0], 1: [1.0], 2: [1.0]})  # C1's: every case passes on every seed
    assert seed_checked("reproduced", ("≥", 0.9), on_side) == (
        "reproduced (every one of the 3 seeds gives +1.000 (a zero-width interval), on its side of 0.9 on every seed)")
    off_side = spread({0: [0.05], 1: [0.05], 2: [0.05]})
    assert seed_checked("reproduced", ("≥", 0.1), off_side).startswith("not established on 3 seeds")
    assert seed_checked("partly reproduced", None, fails) == "partly reproduced"  # a verdict not checked
