"""The commands over many runs: where `report` writes by default, what `runs` shows; a misspelt recipe name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.errors import LatentBridgeError
from latentbridge.report.runs import report_folder

from .test_report_builder import make_run, table_rows

cli = CliRunner()
def run_folder(root, name, seed=0):
    return make_run(root, name, {"name": name, "train": {"steps": 200}}, seed, {100: 5, 200: 6}, final=5)


def test_report_of_one_run_goes_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = run_folder(tmp_path / "runs", "a")
    result = cli.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "report" / "report.md").is_file()
    assert not (tmp_path / "report").exists()
    assert str(folder / "report" / "report.md") in result.output


def test_report_of_a_sweep_folder_goes_into_it_and_never_lists_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        run_folder(sweep, "a", seed)
    for _ in range(2):  # the second time, sweep/report/ (with its report.md and curves/) is already there
        result = cli.invoke(app, ["report", "sweep"])
        assert result.exit_code == 0, result.output
        text = (sweep / "report" / "report.md").read_text()
        assert "2 runs" in text
        assert {r[0] for r in table_rows(text, "Experiment table")} == {"`a-seed0`", "`a-seed1`"}
    assert not (tmp_path / "report").exists()
    # even a report folder that looks like a run (someone copied one into it) is not one of the runs
    (sweep / "report" / "recipe.yaml").write_text((sweep / "a-seed0" / "recipe.yaml").read_text())
    (sweep / "report" / "summary.json").write_text((sweep / "a-seed0" / "summary.json").read_text())
    result = cli.invoke(app, ["report", "sweep"])
    assert result.exit_code == 0, result.output
    assert "2 runs" in (sweep / "report" / "report.md").read_text()


def test_report_of_several_folders_goes_into_their_common_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = run_folder(tmp_path / "runs", "a"), run_folder(tmp_path / "runs", "b")
    result = cli.invoke(app, ["report", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "2 runs" in (tmp_path / "runs" / "report" / "report.md").read_text()
    out = tmp_path / "elsewhere"
    result = cli.invoke(app, ["report", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file()


def test_report_of_folders_with_no_common_parent_asks_for_out():
    assert report_folder([Path("runs/a-seed0")]) == Path("runs/a-seed0/report")
    assert report_folder([Path("/data/runs/a"), Path("/data/sweep")]) == Path("/data/report")
    with pytest.raises(LatentBridgeError, match="share no parent folder.*--out"):
        report_folder([Path("/data/a"), Path("/scratch/b")])


def test_report_help_says_where_it_writes():
    result = cli.invoke(app, ["report", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<FOLDER>/report" in result.output and "common parent" in result.output


def write_index(root):
    root.mkdir()
    lines = [{"run_id": "a1", "recipe": "r", "overrides": ["train.lr=1e-4", "seed=1"], "status": "finished",
              "final": {"bridged": 0.5, "target": 0.8, "source": 0.4}},
             {"run_id": "a2", "recipe": "r", "overrides": [], "status": "running"},
             {"run_id": "a3", "recipe": "r", "status": "failed"},  # an index line from before overrides
             {"run_id": "a4", "recipe": "r", "overrides": ["seed=2", f"run_dir={root}/a4"], "status": "running"}]
    (root / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def rich_rows(output):
    """A rich table's rows by first cell, a cell folded over several lines joined again."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line)[1:-1]]
        if not cells:
            continue
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return {r[0]: r for r in rows}


def test_runs_shows_each_runs_overrides(tmp_path):
    write_index(tmp_path / "runs")
    result = cli.invoke(app, ["runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    rows = rich_rows(result.output)
    assert "overrides" in rows["run id"]
    column = rows["run id"].index("overrides")
    assert rows["a1"][column] == "train.lr=1e-4 seed=1"
    assert rows["a2"][column] == "-" and rows["a3"][column] == "-"
    assert rows["a4"][column] == "seed=2"  # the run's own folder is its id, not news


def test_runs_json_has_overrides_for_every_run(tmp_path):
    write_index(tmp_path / "runs")
    result = cli.invoke(app, ["runs", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    overrides = {r["run_id"]: r["overrides"] for r in json.loads(result.stdout)}
    assert overrides == {"a1": ["train.lr=1e-4", "seed=1"], "a2": [], "a3": [],
                         "a4": ["seed=2", f"run_dir={tmp_path / 'runs'}/a4"]}


def test_a_misspelt_shipped_recipe_gets_a_did_you_mean():
    result = cli.invoke(app, ["validate", "answer_sofplus"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: recipe not found: 'answer_sofplus' is neither a file nor a shipped recipe "
        "(did you mean 'answer_softplus'?); see `latentbridge ls`")


def test_a_name_like_no_recipe_gets_no_hint():
    result = cli.invoke(app, ["validate", "zzzz"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: recipe not found: 'zzzz' is neither a file nor a shipped recipe; see `latentbridge ls`")
