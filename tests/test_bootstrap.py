"""The seeds+items interval: a hierarchical bootstrap that resamples the seeds and the test items.

The t interval over seeds holds the items fixed; this one must also say what another sample of items
would move the figure by. Every seed reads the same items, so the item draw is shared by the seeds of a
replicate (crossed, not nested). Each test below fails for a version that resamples only the seeds, and
the ones marked so also for a version that draws the items afresh for every seed.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.eval.stats import hierarchical_bootstrap, t_interval
from latentbridge.report.document import write_report
from latentbridge.report.runs import load_run
from latentbridge.report.seeds import format_seeds_items, paired_seeds_items, seeds_items_interval

from .test_report_builder import counts, make_run, table_rows

Z = 1.959963984540054


def items(correct: int, n: int = 200) -> list[int]:
    """``n`` items, ``correct`` of them right, spread over the item set (not the first ones)."""
    order = list(range(n))
    random.Random(correct).shuffle(order)
    right = set(order[:correct])
    return [int(i in right) for i in range(n)]


# -- (a) no seed variance: the interval is the items' ------------------------------------------------

def test_with_identical_seeds_the_interval_is_the_binomial_one_and_the_t_interval_is_zero():
    """Five seeds that answer the same 130 of 200 items: over seeds there is no spread at all (the t
    interval is the mean), but another 200 items would give another accuracy: about ±1.96 sqrt(p(1-p)/200).
    A version that resamples only the seeds gives a zero-width interval here."""
    groups = [items(130)] * 5
    mean, low, high = t_interval([sum(g) / len(g) for g in groups])
    assert low == high == mean == 0.65
    b_mean, b_low, b_high = hierarchical_bootstrap(groups)
    assert b_mean == pytest.approx(0.65, abs=1e-12)
    binomial = Z * math.sqrt(0.65 * 0.35 / 200)  # 0.066
    assert (b_high - b_low) / 2 == pytest.approx(binomial, rel=0.15)
    assert b_high - b_low > 0.1 > high - low
    assert b_low < 0.65 < b_high


def test_the_item_part_does_not_shrink_with_more_seeds_on_the_same_items():
    """The seeds share their 200 items: ten seeds that agree item by item know no more about another
    item sample than one does. Drawing items afresh for each seed (items nested in seeds) would shrink
    the item part by about sqrt(10) here; the shared draw does not shrink it at all."""
    one = hierarchical_bootstrap([items(130)])
    ten = hierarchical_bootstrap([items(130)] * 10)
    assert ten == pytest.approx(one, abs=1e-12)
    nested = hierarchical_bootstrap([items(130)] * 10, shared_items=False)  # what seeds on their own items give
    assert (ten[2] - ten[1]) > 2.5 * (nested[2] - nested[1])


# -- (b) no item variance within seeds: the interval is the seeds' -------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.5]), min_size=1, max_size=6), st.integers(1, 40),
       st.integers(0, 5))
def test_items_all_right_or_all_wrong_within_a_seed_add_nothing(levels, n_items, seed):
    """Each seed answers all its items right or all wrong (or any one value for all of them): drawing items
    changes nothing, so the interval is exactly that of one item per seed (the seeds alone)."""
    constant = hierarchical_bootstrap([[v] * n_items for v in levels], resamples=200, seed=seed)
    alone = hierarchical_bootstrap([[v] for v in levels], resamples=200, seed=seed)
    assert constant == pytest.approx(alone, abs=1e-12)


def test_seeds_that_differ_widen_the_interval_and_are_not_pooled_away():
    """The same 60 values, split between three seeds either alike or each seed its own level: resampling
    seeds widens the interval when the seeds differ (pooling the items over seeds would not)."""
    alike = [[1, 0, 0] * 7 for _ in range(3)]
    apart = [[0] * 21, [0] * 21, [1] * 21]
    assert sorted(sum(alike, [])) == sorted(sum(apart, []))
    _, a_low, a_high = hierarchical_bootstrap(alike, resamples=400)
    _, b_low, b_high = hierarchical_bootstrap(apart, resamples=400)
    assert b_high - b_low > 2 * (a_high - a_low)
    assert b_low == 0.0 and b_high >= 2 / 3  # seed levels 0, 0, 1: draws of three seeds


# -- (c) determinism ----------------------------------------------------------------------------------

def test_the_interval_is_fixed_by_its_seed_and_by_nothing_else():
    groups = [items(k) for k in (120, 150, 135, 160, 140)]
    first = hierarchical_bootstrap(groups, seed=3)
    random.seed(12345)  # the global generator is not what draws
    assert hierarchical_bootstrap(groups, seed=3) == first
    assert hierarchical_bootstrap([list(g) for g in groups], seed=3) == first
    assert hierarchical_bootstrap(groups, seed=4) != first
    assert hierarchical_bootstrap(groups, seed=4)[0] == first[0]  # the mean is the data's, not drawn
    assert first[0] == pytest.approx(sum(map(sum, groups)) / 1000, abs=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one seed"):
        hierarchical_bootstrap([])
    with pytest.raises(ValueError, match="at least one item"):
        hierarchical_bootstrap([[1.0], []])
    with pytest.raises(ValueError, match="the same items"):
        hierarchical_bootstrap([[1, 0], [1]])
    assert hierarchical_bootstrap([[1, 0], [1]], shared_items=False, resamples=50)[0] == 0.75


# -- properties ---------------------------------------------------------------------------------------

groups_of_values = st.integers(1, 5).flatmap(lambda n_items: st.lists(
    st.lists(st.floats(-1, 1, width=32), min_size=n_items, max_size=n_items), min_size=1, max_size=4))


@settings(max_examples=40, deadline=None)
@given(groups_of_values, st.booleans())
def test_the_interval_lies_within_the_values(groups, shared):
    mean, low, high = hierarchical_bootstrap(groups, resamples=60, shared_items=shared)
    values = [v for g in groups for v in g]
    assert min(values) - 1e-9 <= low <= high <= max(values) + 1e-9
    assert min(values) - 1e-9 <= mean <= max(values) + 1e-9


@settings(max_examples=40, deadline=None)
@given(groups_of_values, st.booleans())
def test_negated_values_give_the_negated_interval(groups, shared):
    """Paired differences taken the other way round: the interval is mirrored (the tails are symmetric)."""
    mean, low, high = hierarchical_bootstrap(groups, resamples=60, shared_items=shared)
    negated = hierarchical_bootstrap([[-v for v in g] for g in groups], resamples=60, shared_items=shared)
    assert negated == pytest.approx((-mean, -high, -low), abs=1e-9)


# -- in the tables: read from the runs' per-item files -----------------------------------------------

def test_the_report_reads_the_items_of_the_dev_chosen_weights(tmp_path):
    chosen = load_run(make_run(tmp_path, "a", {"name": "a"}, 0, {100: 7, 200: 5}, final=counts(4),
                               best=counts(7, relay=None)))
    assert sum(chosen.item_correct("best").values()) == 7 and sum(chosen.item_correct("final").values()) == 4
    assert len(chosen.item_correct("best")) == 10
    same = load_run(make_run(tmp_path, "b", {"name": "b"}, 0, {100: 4, 200: 6}, final=6))  # best is final
    assert same.item_correct("best") == same.item_correct("final") and sum(same.item_correct("best").values()) == 6
    assert chosen.item_correct("best", "relay") is None  # a system not run
    assert sum(chosen.item_correct("final", "relay").values()) == 6
    untested = load_run(make_run(tmp_path, "c", {"name": "c"}, 0, {100: 4}))
    assert untested.item_correct("best") is None


def test_a_run_without_its_item_file_gives_no_interval(tmp_path):
    runs = [make_run(tmp_path, "a", {"name": "a"}, s, {100: 7}, final=k) for s, k in ((0, 7), (1, 8), (2, 6))]
    others = [make_run(tmp_path, "b", {"name": "b"}, s, {100: 7}, final=k) for s, k in ((0, 5), (1, 6), (2, 6))]
    records = [load_run(r) for r in runs]
    interval = seeds_items_interval(records)
    assert interval is not None and format_seeds_items(records) == f"[{interval[0]:.3f}, {interval[1]:.3f}]"
    assert format_seeds_items(records[:1]) == "-"  # one seed: no interval over seeds
    assert paired_seeds_items([load_run(r) for r in others], records) is not None
    (runs[1] / "eval_samples_test_step_100.jsonl").unlink()
    records = [load_run(r) for r in runs]
    assert seeds_items_interval(records) is None and format_seeds_items(records) == "-"
    assert paired_seeds_items([load_run(r) for r in others], records) is None
    text = write_report([*runs, *others], tmp_path / "out", groups={"a": runs, "b": others}).read_text()
    assert {r[0]: r[3] for r in table_rows(text, "Over seeds")}["a"] == "-"
    assert table_rows(text, "Paired over seeds")[0][5] == "-"
