"""Recipes and experiments on the session's tiny random pair (see tiny_models.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from latentbridge.bridge.build import Experiment
from latentbridge.config.overrides import apply_overrides
from latentbridge.config.recipe import Recipe, validate_recipe

BASE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "models": {"source": None, "target": None},
    "task": {"name": "arith", "n_train": 200, "n_test": 12},
    "translator": {"name": "linear", "k": 3},
    "injection": "soft_plus_text",
    "objectives": {"nll": {"weight": 1.0}},
    "train": {"steps": 4, "batch_size": 4, "lr": 1.0e-2, "log_every": 2},
    "eval": {"every": 2, "n": 6, "dev_n": 6, "batch_size": 4, "max_new_tokens": 6},
}


def recipe_dict(pair: dict[str, Path], *overrides: str, reverse: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    source, target = ("mistral", "llama") if reverse else ("llama", "mistral")
    data["models"] = {"source": str(pair[source]), "target": str(pair[target])}
    return apply_overrides(data, list(overrides))


def make_recipe(pair: dict[str, Path], *overrides: str, reverse: bool = False) -> Recipe:
    return validate_recipe(recipe_dict(pair, *overrides, reverse=reverse))


def make_experiment(pair: dict[str, Path], *overrides: str, reverse: bool = False) -> Experiment:
    return Experiment.build(make_recipe(pair, *overrides, reverse=reverse))


def run_through_cli(pair: dict[str, Path], folder: Path, task: str, *overrides: str,
                    env: dict[str, str] | None = None) -> Any:
    """``latentbridge run`` of the tiny recipe on ``task`` (its default settings) with ``overrides``, the
    run folder ``folder/run``; asserts it finished and returns the CLI result."""
    import json

    from typer.testing import CliRunner

    from latentbridge.cli import app

    recipe = folder / "r.yaml"
    data = recipe_dict(pair, *overrides)
    data["task"] = {"name": task}
    recipe.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["run", str(recipe), f"run_dir={folder / 'run'}"], env=env)
    assert result.exit_code == 0, result.output
    return result
