"""Learning curves (PNG): accuracy per system and every loss term against step.

Curves often lie on each other (source under relay when both answer alike, ``loss`` under
``loss/nll`` when it is the only term), so every line has its own line style and hollow marker, and
each line drawn is a little thinner with smaller markers than the one before, half transparent:
a line on top of another leaves the one below visible around it. A run with a single evaluation
(or a single logged step) gets an x axis from 0 to that step rather than matplotlib's ``step ± 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentbridge.eval.systems import SYSTEMS
from latentbridge.report.runs import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (line style, marker) per line, in drawing order; enough for the four systems and most loss terms
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 2)), "P"),
          ((0, (8, 3)), "X"), ((0, (3, 1, 1, 1, 1, 1)), "<"), ((0, (2, 2)), ">"), ((0, (6, 2, 2, 2)), "*"))
MARKERS_PER_LINE = 12  # at most this many markers on a long loss curve


def _style(i: int, n_points: int) -> dict[str, Any]:
    linestyle, marker = STYLES[i % len(STYLES)]
    return {"linestyle": linestyle, "marker": marker, "markerfacecolor": "none", "alpha": 0.8,
            "markersize": max(9.0 - 1.2 * i, 3.0), "linewidth": max(2.6 - 0.3 * i, 1.0), "zorder": 2 + i,
            "markevery": max(1, n_points // MARKERS_PER_LINE)}


def _x_range(ax: Axes, steps: Sequence[int]) -> None:
    """From 0 to the step when all points share one step (one evaluation); matplotlib's own otherwise."""
    if steps and len(set(steps)) == 1:
        span = max(steps[0], 1)
        ax.set_xlim(-0.05 * span, 1.05 * span)


def curves_figure(run: RunRecord) -> Figure:
    """The figure: accuracy per system (left axes) and every loss term (right axes) against step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax_acc, ax_loss = fig.subplots(1, 2)
    steps = [e["step"] for e in run.evaluations]
    drawn = 0
    for system in SYSTEMS:
        values = [run.accuracy(e, system) for e in run.evaluations]
        if any(v is not None for v in values):
            ax_acc.plot(steps, values, label=system, **_style(drawn, len(steps)))
            drawn += 1
    ax_acc.set(xlabel="step", ylabel="accuracy", title=f"{run.run_id}: accuracy", ylim=(0, 1))
    _x_range(ax_acc, steps)
    if drawn:
        ax_acc.legend()
    terms = sorted({k for m in run.metrics for k in m if k.startswith("loss/")})
    loss_steps: list[int] = []
    drawn = 0
    for key in ["loss", *terms]:
        points = [(m["step"], m[key]) for m in run.metrics if m.get(key) is not None]
        if points:
            ax_loss.plot(*zip(*points, strict=True), label=key, **_style(drawn, len(points)))
            loss_steps += [s for s, _ in points]
            drawn += 1
    ax_loss.set(xlabel="step", ylabel="loss (unweighted terms)", title="training losses")
    _x_range(ax_loss, loss_steps)
    if drawn:
        ax_loss.legend()
    fig.tight_layout()
    return fig


def plot_curves(run: RunRecord, path: Path) -> bool:
    """Write :func:`curves_figure` to ``path`` (PNG); False when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    fig = curves_figure(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return True
