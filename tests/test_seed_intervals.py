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
