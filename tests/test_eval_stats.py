"""Eval intervals (`eval.stats`) on hand-computed cases."""

from __future__ import annotations

import pytest

from cai_engine.eval.stats import bootstrap_ci, wilson


def test_wilson_interval_of_8_out_of_10_matches_the_hand_computation():
    # p = 0.8, z = 1.96: centre = (0.8 + z²/20) / (1 + z²/10) = 0.71674,
    # half = z·sqrt(0.016 + z²/400) / (1 + z²/10) = 0.22658
    r = wilson(8, 10)
    assert r.value == pytest.approx(0.8)
    assert (r.low, r.high) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert r.text() == "80.0% [49.0%, 94.3%] (n = 10)"


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 10, 0.0, 0.27753), (10, 10, 0.72247, 1.0), (50, 100, 0.40383, 0.59617)],
)
def test_wilson_interval_at_the_edges_and_the_middle(k, n, low, high):
    r = wilson(k, n)
    assert (r.low, r.high) == pytest.approx((low, high), abs=1e-5)


def test_wilson_with_no_answers_has_no_value_and_bad_counts_are_refused():
    assert wilson(0, 0).value is None
    assert wilson(0, 0).text() == "– (n = 0)"
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        wilson(3, 2)


def test_wilson_takes_a_sum_of_soft_preferences():
    assert wilson(2.5, 4).value == pytest.approx(0.625)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.1, 0.9, 0.4, 0.6, 0.7, 0.3, 0.8, 0.2]
    a, b = bootstrap_ci(values, seed=1), bootstrap_ci(values, seed=1)
    assert a == b
    assert a.value == pytest.approx(0.5)
    assert a.low < 0.5 < a.high
    assert bootstrap_ci(values, seed=2) != a
    same = bootstrap_ci([0.7] * 5)
    assert (same.low, same.value, same.high) == pytest.approx((0.7, 0.7, 0.7))
    assert bootstrap_ci([]).value is None
