"""Statistics over seeds, the seed being the unit: the exact sign-flip test, the paired t test (its
Student t distribution computed here, no SciPy) and the t interval (the hierarchical bootstrap
over seeds and items: test_bootstrap.py)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentbridge.eval.stats import (
    betainc,
    paired_t,
    percentile,
    sign_flip_exact,
    sign_flip_test,
    smallest_sign_flip_p,
    t_interval,
    t_quantile,
    t_two_sided_p,
)

# 97.5% quantiles of Student's t (published tables, to 12 digits)
T975 = {1: 12.7062047361747, 2: 4.30265272974946, 3: 3.18244630528371, 4: 2.77644510519779,
        5: 2.57058183563631, 10: 2.22813885198627, 30: 2.04227245630124, 100: 1.98397151852355}

differences = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=9)
several = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=2, max_size=9)


def brute_force_sign_flip(d):
    """The definition, pattern by pattern, in exact arithmetic."""
    exact = [Fraction(x) for x in d]
    observed = abs(sum(exact))
    hits = 0
    for pattern in range(2 ** len(d)):
        total = sum(x if pattern >> i & 1 else -x for i, x in enumerate(exact))
        hits += abs(total) >= observed
    return hits / 2 ** len(d)


# -- the README's figures ---------------------------------------------------------------------------

def test_the_contrastive_fix_is_not_significant_over_three_seeds():
    """The README's `-0.048, p = 0.005` rested on items pooled over seeds. Seed by seed the
    differences are -0.015, -0.085, -0.045: paired t p = 0.14, and the sign-flip p cannot go below 0.25."""
    d = [-0.015, -0.085, -0.045]
    t = paired_t(d)
    assert t["mean"] == pytest.approx(-0.048333, abs=1e-6)
    assert t["t"] == pytest.approx(-2.3838, abs=1e-4)
    assert t["p_value"] == pytest.approx(0.1400, abs=5e-4)
    assert round(t["p_value"], 2) == 0.14
    assert t["low"] < 0 < t["high"]  # the interval holds 0
    assert sign_flip_test(d) == 0.25 == smallest_sign_flip_p(3)


# -- Student's t --------------------------------------------------------------------------------------

def test_t_distribution_known_values():
    assert t_two_sided_p(2.0, 2) == pytest.approx(0.1835034190722739, rel=1e-12)
    assert t_two_sided_p(0.0, 5) == 1.0 and t_two_sided_p(math.inf, 3) == 0.0
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, rel=1e-12)  # Cauchy: the quartiles are +-1
    assert t_two_sided_p(2.228138851986274, 10) == pytest.approx(0.05, rel=1e-10)
    assert t_two_sided_p(3.0, 30) == pytest.approx(0.00538996406565, rel=1e-9)  # Simpson on the density
    assert math.isnan(t_two_sided_p(math.nan, 3)) and math.isnan(t_two_sided_p(1.0, 0))
    for df, value in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(value, rel=1e-10), df
    assert t_quantile(0.995, 2) == pytest.approx(9.92484320091830, rel=1e-10)
    with pytest.raises(ValueError):
        t_quantile(0.4, 2)


def test_incomplete_beta_known_values():
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, rel=1e-13)  # uniform
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-12)  # 1 - sum_{k<2} C(4,k) .4^k .6^(4-k)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5, rel=1e-12)
    assert betainc(3, 2, 0) == 0.0 and betainc(3, 2, 1) == 1.0


@given(st.floats(0, 1e6), st.floats(0.01, 1e3))
def test_the_two_sided_p_is_a_probability_falling_with_t(t, bigger):
    for df in (1, 2, 3.5, 10, 200):
        p = t_two_sided_p(t, df)
        assert 0 <= p <= 1
        assert t_two_sided_p(t + bigger, df) <= p + 1e-15
        assert t_two_sided_p(-t, df) == p


@given(st.floats(0, 1e4))
def test_the_t_distribution_matches_closed_forms(t):
    # df = 1 (Cauchy): P(|T| >= t) = 1 - 2 atan(t) / pi;  df = 2: 1 - t / sqrt(2 + t^2)
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-9, abs=1e-14)
    assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9, abs=1e-14)


@given(st.floats(0.5001, 0.9999), st.sampled_from([1, 2, 3, 7, 30]))
def test_the_quantile_inverts_the_distribution(q, df):
    assert t_two_sided_p(t_quantile(q, df), df) == pytest.approx(2 * (1 - q), rel=1e-9)


# -- the paired t test and the t interval -------------------------------------------------------------

@given(several)
def test_the_t_interval_contains_the_mean_and_the_test_agrees_with_it(d):
    t = paired_t(d)
    assert t["low"] <= t["mean"] <= t["high"]
    assert t["df"] == len(d) - 1
    assert 0 <= t["p_value"] <= 1
    if t["p_value"] not in (0.0, 1.0) and abs(t["p_value"] - 0.05) > 1e-6:
        # p < 0.05 exactly when the 95% interval leaves 0 out
        assert (t["p_value"] < 0.05) == (t["low"] > 0 or t["high"] < 0)


@given(several)
def test_negating_every_difference_keeps_the_tests(d):
    a, b = paired_t(d), paired_t([-x for x in d])
    assert a["p_value"] == pytest.approx(b["p_value"], rel=1e-12, abs=1e-300)
    assert a["mean"] == -b["mean"] and a["low"] == pytest.approx(-b["high"], abs=1e-12)


@given(st.lists(st.floats(0, 1, width=32), min_size=2, max_size=8))
def test_the_t_interval_is_the_textbook_one(values):
    mean, low, high = t_interval(values)
    n = len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    assert mean == pytest.approx(sum(values) / n, abs=1e-12)
    assert (high - low) / 2 == pytest.approx(t_quantile(0.975, n - 1) * sd / math.sqrt(n), rel=1e-9, abs=1e-12)


def test_the_t_test_with_too_few_or_equal_differences():
    one = paired_t([0.2])
    assert one["mean"] == 0.2 and math.isnan(one["p_value"]) and math.isnan(one["low"])
    assert paired_t([0.1, 0.1, 0.1]) == {"n": 3, "mean": pytest.approx(0.1), "low": pytest.approx(0.1),
                                         "high": pytest.approx(0.1), "df": 2, "t": math.inf, "p_value": 0.0}
    assert paired_t([0.0, 0.0])["p_value"] == 1.0
    t = paired_t([0.1, 0.3])
    assert t["p_value"] == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)  # t = 0.2 / (0.1414 / 1.414) = 2, df 1
    with pytest.raises(ValueError):
        paired_t([])


# -- the exact sign-flip test over seeds --------------------------------------------------------------

def test_sign_flip_known_values():
    assert sign_flip_test([]) == 1.0 and sign_flip_test([0.0, 0.0]) == 1.0
    assert sign_flip_test([0.1, 0.2]) == 0.5  # means 0.15, 0.05, -0.05, -0.15: two of four reach 0.15
    assert sign_flip_test([0.4, 0.3, 0.2, -0.1]) == 0.25  # of the 16 sums only +-1.0 and +-0.8 reach |0.8|
    assert sign_flip_test([0.3, -0.1, 0.2, 0.1]) == 0.375  # |0.7| and |0.5| (twice, tied exactly): 6 of 16
    assert sign_flip_test([0.5, -0.5]) == 1.0
    assert sign_flip_test([0.1, 0.0]) == 1.0  # a zero difference adds no evidence
    # exact fractions tie exactly: 1/3 - 1/6 = 1/6 against 1/6
    assert sign_flip_test([Fraction(1, 3) - Fraction(1, 6), -Fraction(1, 6), Fraction(1, 2)]) == brute_force_sign_flip(
        [Fraction(1, 6), -Fraction(1, 6), Fraction(1, 2)])
    assert [smallest_sign_flip_p(n) for n in (0, 1, 2, 3, 5)] == [1.0, 1.0, 0.5, 0.25, 0.0625]
    with pytest.raises(ValueError):
        sign_flip_test([math.nan])
    with pytest.raises(ValueError, match="at most"):
        sign_flip_test([0.1] * 25)


@given(differences)
def test_sign_flip_is_the_definition(d):
    assert sign_flip_test(d) == brute_force_sign_flip(d)


@given(differences)
def test_sign_flip_is_symmetric_in_sign_and_order(d):
    p = sign_flip_test(d)
    assert p == sign_flip_test([-x for x in d])
    assert p == sign_flip_test(list(reversed(d)))
    shuffled = list(d)
    random.Random(len(d)).shuffle(shuffled)
    assert p == sign_flip_test(shuffled)


@given(differences)
def test_sign_flip_never_goes_below_its_floor(d):
    p = sign_flip_test(d)
    assert smallest_sign_flip_p(len(d)) <= p <= 1
    assert (p * 2 ** len(d)).is_integer()  # a share of the 2^n sign patterns


@given(st.floats(2**-20, 1, width=32), st.integers(1, 12))
def test_all_differences_equal_and_positive_give_exactly_the_floor(x, n):
    p = sign_flip_test([x] * n)
    assert p == smallest_sign_flip_p(n)
    assert p == (2 / 2**n if n > 1 else 1.0)


@given(st.lists(st.integers(-3, 3), max_size=12))
def test_sign_flip_on_integers_is_the_item_test(d):
    assert sign_flip_test(d) == sign_flip_exact(d)


def test_percentile_interpolates():
    assert percentile([0.0, 1.0, 2.0, 3.0], 0.5) == 1.5
    assert percentile([5.0], 0.975) == 5.0
