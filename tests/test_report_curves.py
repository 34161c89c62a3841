"""The learning-curve figure: dev curves with the test points marked; overlapping curves stay visible,
and one evaluation gets a sensible x axis."""

from __future__ import annotations

import json

import pytest

from latentbridge.eval.systems import SYSTEMS
from latentbridge.report.runs import load_run

from .test_report_builder import counts, make_run

pytest.importorskip("matplotlib")

from latentbridge.report.curves import curves_figure, plot_curves  # noqa: E402


def curves(ax):
    """The curves drawn (not the test points, their legend entries or the best step's line)."""
    return [line for line in ax.get_lines()
            if ax.get_title() == "training losses" or str(line.get_label()).endswith(" (dev)")]


def styles(ax):
    return [(line.get_linestyle(), line.get_marker()) for line in curves(ax)]


def test_equal_curves_get_distinct_styles(tmp_path):
    # source == relay and loss == loss/nll at every point: the lines lie on each other
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: counts(5, source=6), 200: counts(6, source=6)}, final=6)
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0 / s, "loss/nll": 1.0 / s, "loss/kl": 0.5 / s}) + "\n" for s in (50, 100, 150, 200)))
    fig = curves_figure(load_run(folder))
    ax_acc, ax_loss = fig.axes
    assert [line.get_label() for line in curves(ax_acc)] == [f"{s} (dev)" for s in SYSTEMS]
    assert [line.get_label() for line in curves(ax_loss)] == ["loss", "loss/kl", "loss/nll"]
    for ax in (ax_acc, ax_loss):
        lines = curves(ax)
        assert len(set(styles(ax))) == len(lines)  # every line its own line style and marker
        assert len({line.get_linestyle() for line in lines}) > 1
        assert len({line.get_marker() for line in lines}) == len(lines)
        # what is drawn first is drawn larger, so a line on top of it leaves it visible
        sizes = [line.get_markersize() for line in lines]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
        assert all(line.get_alpha() is not None and line.get_alpha() < 1 for line in lines)


def test_dev_curves_and_the_test_points_at_the_end(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 7, 200: 5, 300: 6}, final=counts(4, shuffled=3),
                      best=counts(8, null=2))
    ax = curves_figure(load_run(folder)).axes[0]
    dev = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in curves(ax)}
    assert dev["bridged (dev)"] == ([100, 200, 300], [0.7, 0.5, 0.6])  # dev accuracies, not test
    points = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0]) for line in ax.get_lines()
              if str(line.get_label()).startswith("_test")}
    shift = 0.03 * 300  # each test point just right of its step, beside the dev point there
    assert points["_test final bridged"] == (300 + shift, 0.4) and points["_test best bridged"] == (100 + shift, 0.8)
    assert points["_test final shuffled"] == (300 + shift, 0.3) and points["_test best null"] == (100 + shift, 0.2)
    assert points["_test final target"] == (300 + shift, 0.8) and "_test best target" not in points  # weights change no baseline
    best_line = next(line for line in ax.get_lines() if line.get_label() == "best/ (step 100)")
    assert list(best_line.get_xdata()) == [100, 100]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "test, final weights" in legend and "test, best weights" in legend


def test_a_run_not_tested_yet_has_no_test_points(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 7, 200: 5}, status="running")
    ax = curves_figure(load_run(folder)).axes[0]
    assert not [line for line in ax.get_lines() if str(line.get_label()).startswith(("_test", "test,"))]


def test_one_evaluation_gets_an_axis_from_zero(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 6}, final=6)  # one evaluation, at step 100
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 50, "loss": 1.0}) + "\n")
    fig = curves_figure(load_run(folder))
    ax_acc, ax_loss = fig.axes
    low, high = ax_acc.get_xlim()
    assert low <= 0 and 100 <= high <= 120
    low, high = ax_loss.get_xlim()
    assert low <= 0 and 50 <= high <= 60
    assert plot_curves(load_run(folder), tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 1000


def test_a_run_evaluated_at_step_zero_only(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {0: 6}, final=6)
    (folder / "metrics.jsonl").write_text("")
    fig = curves_figure(load_run(folder))
    low, high = fig.axes[0].get_xlim()
    assert low <= 0 < high and high <= 2
    assert not fig.axes[1].get_lines()


def test_nothing_covers_the_curves(tmp_path):
    """The legends stand outside their axes, and no test point sits on a dev curve's point."""
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 7, 200: 5, 300: 6}, final=counts(4), best=counts(8))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (100, 200, 300)))
    fig = curves_figure(load_run(folder))
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    ax = fig.axes[0]
    dev = {(x, y) for line in curves(ax) for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}
    tested = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.get_lines() if str(line.get_label()).startswith("_test")]
    assert tested and not set(tested) & dev
