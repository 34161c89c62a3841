"""The CLI through Typer's CliRunner: exact messages and exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.config.catalog import shipped_recipes

from .test_recipe import GOOD

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_list_plugins_json():
    result = invoke("list-plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert by_name[("objective", "nll")]["distribution"] == "latentbridge"
    assert ("translator", "linear") in by_name
    assert ("injection", "soft_only") in by_name and ("injection", "soft_plus_text") in by_name
    assert ("logger", "tensorboard") in by_name and ("quantity", "question_chunks") in by_name
    for row in rows:
        assert row["kind"] in {"objective", "translator", "injection", "task", "logger", "system", "quantity"}
        assert isinstance(row["version"], str) and row["description"]


def test_list_plugins_table_and_kind_filter():
    result = invoke("list-plugins", "--kind", "translator")
    assert result.exit_code == 0
    assert "linear" in result.stdout and "nll" not in result.stdout
    bad = invoke("list-plugins", "--kind", "widget")
    assert bad.exit_code == 2
    assert "error: --kind: unknown kind 'widget'" in bad.stderr


def test_describe_shows_documented_defaults():
    result = invoke("describe", "nll")
    assert result.exit_code == 0
    for key in ("weight", "start_step", "warmup_steps", "reduction"):
        assert key in result.stdout
    missing = invoke("describe", "nl")
    assert missing.exit_code == 2
    assert "unknown plugin 'nl' (did you mean 'nll'?)" in missing.stderr


def test_validate_good_recipe(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "is a valid recipe" in result.stdout
    shown = invoke("validate", str(path), "train.steps=5", "--show")
    assert shown.exit_code == 0
    assert "steps: 5" in shown.stdout


def test_validate_three_mistakes_exit_2_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("weight: 1.0", 'weight: "abc"').replace("k: 4", "k: 0").replace("steps: 20", "steps: -5"))
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"error: 3 problems in {path}:",
        "  train.steps: expected an integer >= 0, got -5",
        "  translator.k: expected an integer > 0, got 0",
        '  objectives.nll.weight: expected a number >= 0, got "abc"',
    ]


def test_debug_shows_the_traceback(tmp_path):
    from latentbridge.cli.app import state

    try:
        result = invoke("--debug", "validate", str(tmp_path / "missing.yaml"))
        assert result.exit_code != 0
        assert result.exception is not None and type(result.exception).__name__ == "LatentBridgeError"
    finally:
        state.debug = False


def test_missing_recipe_is_one_line():
    result = invoke("validate", "does/not/exist.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: recipe file not found: does/not/exist.yaml"


def test_ls_lists_every_shipped_recipe():
    result = invoke("ls", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert [r["name"] for r in listed] == [r.name for r in shipped_recipes()]
    assert "answer_softplus" in {r["name"] for r in listed}
    assert all(r["description"] for r in listed)


@pytest.mark.parametrize("name", [r.name for r in shipped_recipes()])
def test_every_shipped_recipe_validates(name):
    result = invoke("validate", name)
    assert result.exit_code == 0, result.output


def test_cp_refuses_to_overwrite_without_force(tmp_path):
    first = invoke("cp", "answer_softplus", str(tmp_path))
    assert first.exit_code == 0, first.output
    target = tmp_path / "answer_softplus.yaml"
    assert target.read_text() == shipped_recipes()[[r.name for r in shipped_recipes()].index("answer_softplus")].path.read_text()
    target.write_text("# my edits\n")
    again = invoke("cp", "answer_softplus", str(target))
    assert again.exit_code == 2
    assert "already exists; use --force" in again.stderr
    assert target.read_text() == "# my edits\n"
    forced = invoke("cp", "answer_softplus", str(target), "--force")
    assert forced.exit_code == 0
    assert target.read_text() != "# my edits\n"


def test_cp_unknown_recipe_suggests():
    result = invoke("cp", "answer_softplu", ".")
    assert result.exit_code == 2
    assert "did you mean 'answer_softplus'?" in result.stderr
