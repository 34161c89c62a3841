"""Accuracy against message size (PNG): one line per method (translator and injection mode), one point per
message size (a sweep over ``translator.k``, say), the mean over seeds of the bridged test accuracy of the
dev-chosen weights; the text relay (its bytes, its accuracy) and the target alone are marked beside."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentbridge.report.runs import RunRecord


def _test(run: RunRecord) -> dict[str, Any] | None:
    return run.test_best or run.test_final


def size_points(runs: Sequence[RunRecord]) -> dict[str, list[tuple[float, float, int]]]:
    """Per method, ``(mean message bytes, mean bridged accuracy, seeds)`` at each message size, by size."""
    cells: dict[tuple[str, float], list[float]] = defaultdict(list)
    for run in runs:
        test = _test(run)
        bridged = test["systems"].get("bridged") if test else None
        if not bridged or bridged.get("message_bytes") is None:
            continue
        injection = run.recipe.get("injection", {})
        injection = injection.get("name") if isinstance(injection, dict) else injection
        method = f"{run.recipe['translator']['name']} ({injection})"
        cells[(method, float(bridged["message_bytes"]))].append(bridged["accuracy"])
    out: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for (method, size), accs in sorted(cells.items()):
        out[method].append((size, statistics.mean(accs), len(accs)))
    return dict(out)


def plot_sizes(runs: Sequence[RunRecord], path: Path) -> bool:
    """Write the figure to ``path``; False when no run has message sizes or matplotlib is missing."""
    points = size_points(runs)
    if not points:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, pts) in enumerate(sorted(points.items())):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="osD^v<>P"[i % 8], label=method, alpha=0.85)
    relay = [(t["systems"]["relay"]["message_bytes"], t["systems"]["relay"]["accuracy"])
             for t in map(_test, runs) if t and (t["systems"].get("relay") or {}).get("message_bytes") is not None]
    if relay:
        ax.scatter([statistics.mean(r[0] for r in relay)], [statistics.mean(r[1] for r in relay)], marker="*", s=160,
                   color="black", label="text relay", zorder=5)
    target = [t["systems"]["target"]["accuracy"] for t in map(_test, runs) if t and t["systems"].get("target")]
    if target:
        ax.axhline(statistics.mean(target), color="gray", linestyle=":", label="target alone")
    ax.set_xscale("log")
    ax.set_xlabel("message bytes per item (log scale)")
    ax.set_ylabel("bridged test accuracy (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True
