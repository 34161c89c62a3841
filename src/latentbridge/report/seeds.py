"""Comparisons over seeds, the seed being the unit: mean and t interval per configuration, and each
configuration against the first, paired by seed (exact sign-flip and paired t over the per-seed
differences in test accuracy). Items are never pooled over seeds: that would treat the trained models
as fixed and ignore how much a result moves from one seed to the next."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from latentbridge.eval.stats import paired_t, sign_flip_test, smallest_sign_flip_p, t_interval
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


def _count(runs: Sequence[RunRecord], flag: str) -> str:
    return f"{sum(any(f.startswith(flag) for f in r.flags()) for r in runs)}/{len(runs)}"


GROUP_HEADER = ("configuration", "seeds", "test: best", "test: final", "dev peak", "shuffled (test: best)",
                "bridged − shuffled (test: best)", "distinct answers", "collapsed runs", "no-information runs")


def group_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Per configuration, mean ± 95% t interval over seeds: test accuracy of the dev-chosen best
    and of the final weights, the dev peak, the shuffled control and bridged − shuffled (best
    weights); mean distinct answers; runs flagged collapsed or with no information from the source."""
    lines = ["| " + " | ".join(GROUP_HEADER) + " |", "|" + "---|" * len(GROUP_HEADER)]
    for name, runs in groups.items():
        n = len(runs)
        flows = [r.test_best["information_flow"]["difference"] for r in runs
                 if r.test_best and r.test_best.get("information_flow")]
        distinct = [r.test_best["systems"]["bridged"]["distinct"] for r in runs if r.test_best]
        lines.append("| " + " | ".join((
            name, str(n), format_mean_interval(test_accuracies(runs, "best"), n),
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
                 "sign-flip p", "paired t p")


def paired_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Every configuration but the first against the first, seed by seed, for the best and for the
    final weights; then the smallest p the exact sign-flip test allows with those seeds. Empty
    with one configuration."""
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
                lines.append(f"| {name} | {weights} | 0 | - | - | - | - |")
                continue
            counts.add(test["n"])
            interval = "-" if math.isnan(test["low"]) else f"[{test['low']:+.3f}, {test['high']:+.3f}]"
            lines.append("| " + " | ".join((
                name, weights, str(test["n"]), f"{test['mean']:+.3f}", interval, format_p(test["sign_flip_p"]),
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
