"""The report's settings column and Differences section when runs use different plugins."""

from __future__ import annotations

from latentbridge.report.document import write_report
from latentbridge.report.runs import load_run
from latentbridge.report.tables import differences, run_settings

from .test_report_builder import make_run, table_rows


def recipe(translator, lr=1e-3):
    return {"name": "cmp", "task": {"name": "arith", "n_test": 10}, "translator": translator,
            "injection": {"name": "soft_plus_text"}, "objectives": {"kl": {"weight": 1.0}},
            "train": {"steps": 200, "lr": lr}}


def two_runs(tmp_path, linear_k=3):
    linear = make_run(tmp_path, "linear", recipe({"name": "linear", "k": linear_k}), 0, {100: 5, 200: 5}, final=5)
    resampler = make_run(tmp_path, "resampler",
                         recipe({"name": "resampler", "k": 3, "d_model": 64, "depth": 2, "heads": 4}, lr=1e-4),
                         0, {100: 6, 200: 6}, final=6)
    return [load_run(linear), load_run(resampler)]


def test_a_plugin_swap_is_one_difference_shown_first(tmp_path):
    runs = two_runs(tmp_path)
    diff = differences(runs)
    assert list(diff)[0] == "translator"
    assert not [k for k in diff if k.startswith("translator.")]  # d_model, depth, heads, k, name: not separate
    assert diff["translator"][0] == {"name": "linear", "k": 3}
    assert run_settings(runs[0], diff, 0) == "translator=linear, train.lr=0.001"
    assert run_settings(runs[1], diff, 1) == "translator=resampler, train.lr=0.0001"


def test_a_setting_both_plugins_have_still_differs(tmp_path):
    runs = two_runs(tmp_path, linear_k=5)
    diff = differences(runs)
    assert run_settings(runs[0], diff, 0) == "translator=linear, tr.k=5, train.lr=0.001"
    assert run_settings(runs[1], diff, 1) == "translator=resampler, tr.k=3, train.lr=0.0001"


def test_the_report_shows_the_swap_as_one_row(tmp_path):
    runs = two_runs(tmp_path / "runs")
    text = write_report([r.folder for r in runs], tmp_path / "out").read_text()
    settings = {r[0].strip("`"): r[2] for r in table_rows(text, "Experiment table")}
    assert settings == {"linear-seed0": "translator=linear, train.lr=0.001",
                        "resampler-seed0": "translator=resampler, train.lr=0.0001"}
    rows = {r[0].strip("`"): r[1:] for r in table_rows(text, "Differences")}
    assert list(rows)[0] == "translator"
    assert set(rows) == {"translator", "train.lr"}
    assert rows["translator"] == ['`linear` `{"k": 3}`', '`resampler` `{"d_model": 64, "depth": 2, "heads": 4, "k": 3}`']
    assert rows["train.lr"] == ["`0.001`", "`0.0001`"]


def test_an_objective_an_ablation_removed_is_still_with_or_without(tmp_path):
    full = recipe({"name": "linear", "k": 3})
    ablated = {**full, "objectives": {"kl": {"weight": 1.0}, "nll": {"weight": 0.5}}}
    runs = [load_run(make_run(tmp_path, "a", full, 0, {100: 5, 200: 5}, final=5)),
            load_run(make_run(tmp_path, "b", ablated, 0, {100: 5, 200: 5}, final=5))]
    diff = differences(runs)
    assert run_settings(runs[0], diff, 0) == "no obj.nll"
    assert run_settings(runs[1], diff, 1) == "with obj.nll"


def test_every_swap_comes_before_other_settings_and_the_short_form_counts(tmp_path):
    base = recipe({"name": "linear", "k": 3})
    other = {**recipe({"name": "resampler", "k": 3, "d_model": 64}), "injection": "soft_only",
             "train": {"steps": 100, "lr": 1e-2, "batch_size": 8}, "eval": {"n": 5}}
    runs = [load_run(make_run(tmp_path, "a", base, 0, {100: 5, 200: 5}, final=5)),
            load_run(make_run(tmp_path, "b", other, 0, {100: 5, 200: 5}, final=5))]
    diff = differences(runs)
    assert list(diff)[:2] == ["translator", "injection"]
    assert run_settings(runs[1], diff, 1) == "translator=resampler, injection=soft_only, with eval, train.batch_size=8, …"
