"""The example third-party package, installed for real and discovered through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

EXAMPLE = REPO / "plugins" / "examples" / "latentbridge-l2"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example (offline, no deps) into a private folder and return it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    return target


def run_cli(site: Path, *args: str, disable_autoload: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD", None)
    if disable_autoload:
        env["LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "latentbridge", *args], env=env, capture_output=True, text=True)


def test_listed_with_its_own_distribution(installed):
    result = run_cli(installed, "list-plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    l2 = rows[("objective", "l2")]
    assert l2["distribution"] == "latentbridge-l2"
    assert l2["version"] == "0.1.0"
    assert l2["module"] == "latentbridge_l2"
    assert l2["status"] == "ok" and not [r for r in rows.values() if r["kind"] == "problem"]
    assert rows[("objective", "nll")]["distribution"] == "latentbridge"


def test_usable_from_a_recipe_by_name(installed, tmp_path):
    from .test_recipe import GOOD

    recipe = tmp_path / "with_l2.yaml"
    recipe.write_text(GOOD.replace("  nll: {weight: 1.0}", "  nll: {weight: 1.0}\n  l2: {weight: 0.01, norm: 2.0}"))
    ok = run_cli(installed, "validate", str(recipe), "--show")
    assert ok.returncode == 0, ok.stderr
    assert "l2:" in ok.stdout and "norm: 2.0" in ok.stdout
    bad = run_cli(installed, "validate", str(recipe), "objectives.l2.norm=-1")
    assert bad.returncode == 2
    assert "objectives.l2.norm: expected a number > 0 or null, got -1" in bad.stderr


def test_autoload_switch_hides_it(installed, tmp_path):
    result = run_cli(installed, "list-plugins", "--json", disable_autoload=True)
    assert result.returncode == 0, result.stderr
    names = {r["name"] for r in json.loads(result.stdout)}
    assert "l2" not in names and "nll" in names


def test_its_own_message_kind_trains_and_evaluates_through_the_cli(installed, tmp_path):
    """The package's ``soft_echo`` message (translator echo_linear, injection soft_around): validate
    refuses it with another injection mode, and a short run trains and evaluates with it."""
    from .test_recipe import GOOD

    recipe = tmp_path / "echo.yaml"
    recipe.write_text(GOOD)
    short = ["task=arith", "translator=echo_linear", "injection=soft_around", "train.steps=2", "train.warmup_steps=0",
             "eval.every=2", "eval.n=4", "eval.dev_n=4", "eval.max_new_tokens=4", f"run_dir={tmp_path / 'run'}"]
    refused = run_cli(installed, "validate", str(recipe), "translator=echo_linear")
    assert refused.returncode == 2 and "does not place the soft_echo message" in refused.stderr
    done = run_cli(installed, "run", str(recipe), *short)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    bridged = summary["test"]["final"]["systems"]["bridged"]
    assert bridged["n"] == 4 and bridged["message_tokens"] == 8  # the default k = 8, counted once
    for control in ("covgauss", "randomrot"):  # the controls read the package's message through its vectors
        assert summary["test"]["final"]["systems"][control]["n"] == 4


def test_its_own_evaluation_system_runs_through_the_cli(installed, tmp_path):
    """The package's ``answer_relay`` system is listed as kind system and evaluated by name."""
    from .test_recipe import GOOD

    listed = run_cli(installed, "list-plugins", "--json", "--kind", "system")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["answer_relay"]["distribution"] == "latentbridge-l2"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD)
    done = run_cli(installed, "run", str(recipe), "task=arith", "train.steps=2", "train.warmup_steps=0",
                   "eval.every=2", "eval.n=4", "eval.dev_n=4", "eval.max_new_tokens=4",
                   "eval.systems=[bridged,source,answer_relay]", f"run_dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]["final"]["systems"]
    assert final["answer_relay"]["n"] == 4 and final["answer_relay"]["message_bytes"] > 0
    records = [json.loads(x) for x in (tmp_path / "run" / "eval_samples_test_step_2.jsonl").read_text().splitlines()]
    assert all(isinstance(r["answer_relay_full"], str) for r in records)
