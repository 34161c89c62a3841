"""Learning curves (PNG): dev accuracy per system and every loss term against step; the test
evaluations at the end are marked (the final weights at the final step, filled; the dev-chosen best
weights at the best step, stars), with the best step as a dotted vertical line.

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

from latentbridge.eval.systems import system_role
from latentbridge.report.runs import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (line style, marker) per line, in drawing order; enough for the six systems and most loss terms
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


def _test_points(ax: Axes, run: RunRecord, system: str, color: Any, shift: float) -> None:
    """The test accuracies of ``system``: final weights (circle) and, for the systems the weights change
    (not the baselines), the best weights (star), each drawn ``shift`` steps right of its step, beside the
    dev curve's point there rather than over it."""
    for weights, marker in (("final", "o"), ("best", "*")):
        summary = run.test.get(weights)
        value = run.accuracy(summary, system)
        if value is not None and not (weights == "best" and system_role(system) == "baseline"):
            ax.plot([summary["step"] + shift], [value], linestyle="none", marker=marker, color=color, markersize=9,
                    markeredgecolor="black", markeredgewidth=0.6, zorder=1, label=f"_test {weights} {system}")


def curves_figure(run: RunRecord) -> Figure:
    """The figure: dev accuracy per system with the test points (left axes), every loss term (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.5))
    ax_acc, ax_loss = fig.subplots(1, 2)
    steps = [e["step"] for e in run.evaluations]
    span = max([*steps, *(s["step"] for s in run.test.values() if s)], default=1) or 1
    shift = 0.03 * span  # the test points sit just right of their step
    drawn = 0
    systems = list(dict.fromkeys(s for e in run.evaluations for s in e.get("systems", {})))
    for system in systems:
        values = [run.accuracy(e, system) for e in run.evaluations]
        if any(v is not None for v in values):
            (line,) = ax_acc.plot(steps, values, label=f"{system} (dev)", **_style(drawn, len(steps)))
            _test_points(ax_acc, run, system, line.get_color(), shift)
            drawn += 1
    for weights, marker in (("final", "o"), ("best", "*")):  # legend entries for the test points
        if weights in run.test:
            ax_acc.plot([], [], linestyle="none", marker=marker, color="lightgrey", markeredgecolor="black",
                        markersize=9, label=f"test, {weights} weights")
    if run.best_step is not None:
        ax_acc.axvline(run.best_step, color="grey", linestyle=":", linewidth=1.0, label=f"best/ (step {run.best_step})")
    ax_acc.set(xlabel="step", ylabel="accuracy", title=f"{run.run_id}: accuracy (dev; test marked)", ylim=(0, 1))
    _x_range(ax_acc, steps)
    if drawn:  # outside the axes: a legend never covers a curve
        ax_acc.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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
        ax_loss.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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
    fig.savefig(path, dpi=90, metadata={"Software": None})  # no version string: the same figure, the same bytes
    return True
