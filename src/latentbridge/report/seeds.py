"""Comparisons over seeds, the seed being the unit: mean and t interval per configuration, and each
configuration against the first, paired by seed (exact sign-flip and paired t over the per-seed
differences in test accuracy). Items are never pooled over seeds: that would treat the trained models
as fixed and ignore how much a result moves from one seed to the next.

The t interval holds the test items fixed. Beside it, the seeds+items interval (a hierarchical
bootstrap over the seeds and the items, read from the runs' per-item files) says how much the figure
would also move on another sample of items of the same kind."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from latentbridge.eval.stats import (
    hierarchical_bootstrap,
    paired_t,
    sign_flip_test,
    smallest_sign_flip_p,
    t_interval,
)
from latentbridge.report.runs import RunRecord
from latentbridge.report.tables import format_p

WEIGHTS = ("best", "final")  # the test evaluations: of the dev-chosen best weights, of the final weights


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (nan with one seed)."""
    mean, low, high = t_interval(values)
    return mean, (high - low) / 2


def format_mean_interval(values: Sequence[float], of: int | None = None) -> str:
    """``mean ± half-width`` of the 95% t interval over seeds; the mean alone with one seed; ``-`` with
    none; ``(k of n)`` when only ``k`` of the configuration's ``of`` runs have the value."""
    if not values:
        return "-"
    mean, half = mean_interval(values)
    text = f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"
    return text + (f" ({len(values)} of {of})" if of is not None and of != len(values) else "")


def exact_accuracy(summary: dict[str, Any] | None, system: str = "bridged") -> Fraction | None:
    """A system's accuracy as the exact fraction correct / n (so equal accuracies tie exactly)."""
    s = summary["systems"].get(system) if summary else None
    return None if s is None or not s["n"] else Fraction(s["correct"], s["n"])


def test_accuracies(runs: Sequence[RunRecord], weights: str, system: str = "bridged") -> list[float]:
    """Test accuracy of ``system`` with the ``weights`` ("best" or "final") of every run that has it."""
    values = [RunRecord.accuracy(r.test.get(weights), system) for r in runs]
    return [v for v in values if v is not None]


def paired_differences(runs: Sequence[RunRecord], baseline: Sequence[RunRecord], weights: str = "best"
                       ) -> list[tuple[Any, Fraction]]:
    """Per seed both configurations ran (and tested with ``weights``): bridged test accuracy of
    ``runs`` minus that of ``baseline``, exactly, as ``(seed, difference)`` in ``runs``' order."""
    theirs = {r.seed: exact_accuracy(r.test.get(weights)) for r in baseline}
    out = []
    for run in runs:
        mine, other = exact_accuracy(run.test.get(weights)), theirs.get(run.seed)
        if mine is not None and other is not None:
            out.append((run.seed, mine - other))
    return out


def paired_over_seeds(runs: Sequence[RunRecord], baseline: Sequence[RunRecord], weights: str = "best"
                      ) -> dict[str, Any] | None:
    """The seed-level comparison: paired seeds, mean difference, its 95% paired t interval, the exact
    sign-flip p and the paired t p; None when the configurations share no tested seed."""
    differences = [d for _, d in paired_differences(runs, baseline, weights)]
    if not differences:
        return None
    t = paired_t(differences)
    return {"n": len(differences), "mean": t["mean"], "low": t["low"], "high": t["high"],
            "sign_flip_p": sign_flip_test(differences), "t_p": t["p_value"],
            "smallest_p": smallest_sign_flip_p(len(differences))}


def _bootstrap(items: Sequence[dict[str, float]]) -> tuple[float, float] | None:
    """The seeds+items 95% interval of per-seed item values keyed by item id (None with under two seeds):
    the items crossed with the seeds when every seed has the same item ids, else resampled per seed."""
    if len(items) < 2:
        return None
    order = list(items[0])
    shared = all(d.keys() == items[0].keys() for d in items)
    groups = [[d[i] for i in order] for d in items] if shared else [list(d.values()) for d in items]
    _, low, high = hierarchical_bootstrap(groups, shared_items=shared)
    return low, high


def seeds_items_interval(runs: Sequence[RunRecord], weights: str = "best", system: str = "bridged"
                         ) -> tuple[float, float] | None:
    """95% interval of the mean test accuracy of ``system`` over the runs tested with ``weights``, the
    seeds and the test items resampled (:func:`~latentbridge.eval.stats.hierarchical_bootstrap`); None
    with under two such runs, or when one of them lacks its per-item file."""
    tested = [r for r in runs if RunRecord.accuracy(r.test.get(weights), system) is not None]
    items = [r.item_correct(weights, system) for r in tested]
    return None if any(d is None for d in items) else _bootstrap(items)  # type: ignore[arg-type]


def format_seeds_items(runs: Sequence[RunRecord], weights: str = "best", system: str = "bridged") -> str:
    """``[low, high]``: the seeds+items 95% interval of :func:`seeds_items_interval`, or ``-``."""
    interval = seeds_items_interval(runs, weights, system)
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def paired_seeds_items(runs: Sequence[RunRecord], baseline: Sequence[RunRecord], weights: str = "best"
                       ) -> tuple[float, float] | None:
    """The seeds+items 95% interval of the mean paired difference in bridged test accuracy (``runs``
    minus ``baseline``, paired by seed and by item); None with under two paired seeds, a missing
    per-item file, or a pair of runs tested on different items."""
    theirs = {r.seed: r for r in baseline if exact_accuracy(r.test.get(weights)) is not None}
    differences = []
    for run in runs:
        other = theirs.get(run.seed)
        if other is None or exact_accuracy(run.test.get(weights)) is None:
            continue  # the seeds paired_differences pairs
        mine, base = run.item_correct(weights), other.item_correct(weights)
        if mine is None or base is None or mine.keys() != base.keys():
            return None
        differences.append({i: float(mine[i] - base[i]) for i in mine})
    return _bootstrap(differences)


def _count(runs: Sequence[RunRecord], flag: str) -> str:
    return f"{sum(any(f.startswith(flag) for f in r.flags()) for r in runs)}/{len(runs)}"


GROUP_HEADER = ("configuration", "seeds", "test: best", "test: best, seeds+items 95%", "test: final", "dev peak",
                "shuffled (test: best)", "bridged − shuffled (test: best)", "distinct answers", "collapsed runs", "no-information runs")


def group_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Per configuration, mean ± 95% t interval over seeds: test accuracy of the dev-chosen best
    and of the final weights, the dev peak, the shuffled control and bridged − shuffled (best
    weights); beside the first, its seeds+items 95% interval (seeds and test items resampled); mean
    distinct answers; runs flagged collapsed or with no information from the source."""
    lines = ["| " + " | ".join(GROUP_HEADER) + " |", "|" + "---|" * len(GROUP_HEADER)]
    for name, runs in groups.items():
        n = len(runs)
        flows = [r.test_best["information_flow"]["difference"] for r in runs
                 if r.test_best and r.test_best.get("information_flow")]
        distinct = [r.test_best["systems"]["bridged"]["distinct"] for r in runs if r.test_best]
        lines.append("| " + " | ".join((
            name, str(n), format_mean_interval(test_accuracies(runs, "best"), n), format_seeds_items(runs),
            format_mean_interval(test_accuracies(runs, "final"), n),
            format_mean_interval([RunRecord.accuracy(r.dev_peak, "bridged") for r in runs], n),
            format_mean_interval(test_accuracies(runs, "best", "shuffled"), n), format_signed_mean_interval(flows, n),
            f"{sum(distinct) / len(distinct):.1f}" if distinct else "-",
            _count(runs, "collapse"), _count(runs, "no information"))) + " |")
    return lines


def format_signed_mean_interval(values: Sequence[float], of: int | None = None) -> str:
    """:func:`format_mean_interval` of a difference: ``+0.450 ± 0.635``."""
    text = format_mean_interval(values, of)
    return text if text == "-" or text.startswith("-") else "+" + text


PAIRED_HEADER = ("configuration", "weights", "paired seeds", "mean difference", "95% t interval",
                 "95% seeds+items", "sign-flip p", "paired t p")


def paired_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Every configuration but the first against the first, seed by seed, for the best and for the
    final weights (the t interval over seeds, and beside it the seeds+items interval, seeds and items
    resampled); then the smallest p the exact sign-flip test allows with those seeds. Empty with one
    configuration."""
    names = list(groups)
    if len(names) < 2:
        return []
    first = groups[names[0]]
    lines = ["| " + " | ".join(PAIRED_HEADER) + " |", "|" + "---|" * len(PAIRED_HEADER)]
    counts = set()
    for name in names[1:]:
        for weights in WEIGHTS:
            test = paired_over_seeds(groups[name], first, weights)
            if test is None:
                lines.append(f"| {name} | {weights} | 0 | - | - | - | - | - |")
                continue
            counts.add(test["n"])
            interval = "-" if math.isnan(test["low"]) else f"[{test['low']:+.3f}, {test['high']:+.3f}]"
            both = paired_seeds_items(groups[name], first, weights)
            lines.append("| " + " | ".join((
                name, weights, str(test["n"]), f"{test['mean']:+.3f}", interval,
                "-" if both is None else f"[{both[0]:+.3f}, {both[1]:+.3f}]", format_p(test["sign_flip_p"]),
                format_p(test["t_p"]))) + " |")
    return [*lines, "", smallest_p_line(sorted(counts))]


def smallest_p_line(counts: Sequence[int]) -> str:
    """The sentence on the floor of the sign-flip p: ``With 3 paired seeds ... 2/2^3 = 0.25.``"""
    if not counts:
        return "No configuration shares a tested seed with the first: nothing is compared."
    floors = ", ".join(f"{n} paired seed{'s' if n != 1 else ''}: 2/2^{n} = {format_p(smallest_sign_flip_p(n))}"
                       for n in counts)
    return (f"The exact sign-flip test over seeds cannot give a p below 2/2^n with n paired seeds ({floors}); "
            "the paired t p can, but only by assuming the per-seed differences are normal.")
