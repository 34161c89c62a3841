"""Comparisons over seeds: mean and interval per configuration, paired tests against the first."""

from __future__ import annotations

import math
from collections.abc import Sequence

from latentbridge.eval.stats import sign_flip_exact
from latentbridge.report.runs import RunRecord

# -- groups of seeds ----------------------------------------------------------------------------------

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_critical(df: int) -> float:
    """Two-sided 95% Student-t critical value (table, rounded down to the nearest listed df)."""
    if df <= 0:
        return math.nan
    usable = [d for d in _T95 if d <= df]
    return _T95[max(usable)] if df <= 30 else 1.960


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval over seeds (nan with one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_critical(n - 1) * sd / math.sqrt(n)


def group_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Mean ± 95% interval over seeds per configuration, and a paired test of each configuration
    against the first: per item, correct answers summed over the seeds both have, then an exact
    sign-flip test over items (items are the unit; see :func:`sign_flip_exact`)."""
    names = list(groups)
    first = groups[names[0]]
    header = ("configuration", "seeds", "bridged final", "bridged peak", "distinct answers", "collapsed runs",
              f"vs {names[0]}: difference, p")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        runs = groups[name]
        finals = [r.accuracy(r.final, "bridged") for r in runs]
        peaks = [r.accuracy(r.peak, "bridged") for r in runs]
        distinct = [r.final["systems"]["bridged"]["distinct"] for r in runs]
        collapsed = sum(r.final["systems"]["bridged"]["collapsed"] for r in runs)
        test = "-" if name == names[0] else paired_test_cell(runs, first)
        lines.append("| " + " | ".join((
            name, str(len(runs)), format_mean_interval(finals), format_mean_interval(peaks),
            f"{sum(distinct) / len(distinct):.1f}", f"{collapsed}/{len(runs)}", test)) + " |")
    return lines


def format_mean_interval(values: Sequence[float]) -> str:
    """``mean ± half-width`` of the 95% interval over seeds; the mean alone with one seed."""
    mean, half = mean_interval(values)
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def paired_test_cell(runs: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> str:
    """``+0.018, p = 0.259``: final bridged accuracy of ``runs`` minus ``baseline`` over their shared
    seeds, and the exact sign-flip p over items; ``-`` when they share no scored item."""
    differences, seeds = paired_differences(runs, baseline)
    if not differences:
        return "-"
    return f"{sum(differences) / (len(differences) * seeds):+.3f}, p = {sign_flip_exact(differences):.3g}"


def paired_differences(runs: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> tuple[list[int], int]:
    """Per item of the final evaluations: bridged correct answers of ``runs`` minus those of
    ``baseline``, summed over the seeds both have; and the number of those seeds. An item counts
    only when every shared seed scored it in both."""
    by_seed = {r.recipe.get("seed"): r for r in baseline}
    pairs = [(run, by_seed[run.recipe.get("seed")]) for run in runs if run.recipe.get("seed") in by_seed]
    totals: dict[str, int] = {}
    seen: dict[str, int] = {}
    for run, other in pairs:
        theirs = {r["id"]: r["bridged_correct"] for r in other.final_records}
        for record in run.final_records:
            mine, their = record["bridged_correct"], theirs.get(record["id"])
            if mine is None or their is None:
                continue
            totals[record["id"]] = totals.get(record["id"], 0) + int(mine) - int(their)
            seen[record["id"]] = seen.get(record["id"], 0) + 1
    return [totals[i] for i in totals if seen[i] == len(pairs)], len(pairs)
