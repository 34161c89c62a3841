"""The learning-curve figure: overlapping curves stay visible, and one evaluation gets a sensible x axis."""

from __future__ import annotations

import json

import pytest

from latentbridge.report.runs import load_run

from .test_report import make_run

pytest.importorskip("matplotlib")

from latentbridge.report.curves import curves_figure, plot_curves  # noqa: E402


def styles(ax):
    return [(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]


def test_equal_curves_get_distinct_styles(tmp_path):
    # source == relay and loss == loss/nll at every point: the lines lie on each other
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, (0.5, 0.6), (0.6, 0.8, 0.6), [True] * 10)
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0 / s, "loss/nll": 1.0 / s, "loss/kl": 0.5 / s}) + "\n" for s in (50, 100, 150, 200)))
    fig = curves_figure(load_run(folder))
    ax_acc, ax_loss = fig.axes
    assert [line.get_label() for line in ax_acc.get_lines()] == ["source", "target", "bridged", "relay"]
    assert [line.get_label() for line in ax_loss.get_lines()] == ["loss", "loss/kl", "loss/nll"]
    for ax in (ax_acc, ax_loss):
        assert len(set(styles(ax))) == len(ax.get_lines())  # every line its own line style and marker
        assert len({line.get_linestyle() for line in ax.get_lines()}) > 1
        assert len({line.get_marker() for line in ax.get_lines()}) == len(ax.get_lines())
        # what is drawn first is drawn larger, so a line on top of it leaves it visible
        sizes = [line.get_markersize() for line in ax.get_lines()]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
        assert all(line.get_alpha() is not None and line.get_alpha() < 1 for line in ax.get_lines())


def test_one_evaluation_gets_an_axis_from_zero(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, (0.5, 0.6), (0.6, 0.8, 0.6), [True] * 10)
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({"evaluations": summary["evaluations"][:1]}))  # step 100 only
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 50, "loss": 1.0}) + "\n")
    fig = curves_figure(load_run(folder))
    ax_acc, ax_loss = fig.axes
    low, high = ax_acc.get_xlim()
    assert low <= 0 and 100 <= high <= 120
    low, high = ax_loss.get_xlim()
    assert low <= 0 and 50 <= high <= 60
    assert plot_curves(load_run(folder), tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 1000


def test_a_run_evaluated_at_step_zero_only(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, (0.5, 0.6), (0.6, 0.8, 0.6), [True] * 10)
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({"evaluations": [{**summary["evaluations"][0], "step": 0}]}))
    (folder / "metrics.jsonl").write_text("")
    fig = curves_figure(load_run(folder))
    low, high = fig.axes[0].get_xlim()
    assert low <= 0 < high and high <= 2
    assert not fig.axes[1].get_lines()
