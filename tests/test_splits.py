"""Every task has train, dev and test; dev is carved from train (or the task's own), disjoint, fixed."""

from __future__ import annotations

import json

import pytest
from latentbridge.plugins.tasks.arith import Arith, ArithConfig, zoo_training_questions
from latentbridge.plugins.tasks.gsm8k import GSM8K, GSM8KConfig
from typer.testing import CliRunner

from latentbridge.bridge.build import Experiment
from latentbridge.cli import app
from latentbridge.config.recipe import validate_recipe

from .helpers import recipe_dict


def split_ids(task):
    return {s: [e.id for e in task.examples(s)] for s in ("train", "dev", "test")}


def test_gsm8k_dev_is_carved_from_train_disjoint_and_fixed(gsm8k_slice):
    task = GSM8K(GSM8KConfig(data_dir=str(gsm8k_slice)))
    task.dev_size = 16
    ids = split_ids(task)
    assert len(ids["dev"]) == 16 and len(ids["train"]) == 64 - 16
    assert not set(ids["dev"]) & set(ids["train"]) and not set(ids["dev"]) & set(ids["test"])
    assert sorted(ids["dev"] + ids["train"], key=lambda i: int(i.split("-")[1])) == [f"train-{n}" for n in range(1, 65)]
    again = GSM8K(GSM8KConfig(data_dir=str(gsm8k_slice)))
    again.dev_size = 16
    assert split_ids(again) == ids  # the same every time, whatever the run's seed
    pool = {e.id for e in task.examples("train")}
    for example in task.examples("dev"):
        assert {e.id for e in task.exemplars(example)} <= pool  # exemplars never come from dev


def test_arith_dev_holds_no_problem_the_tiny_pair_trained_on():
    task = Arith(ArithConfig())
    ids = split_ids(task)
    assert (len(ids["train"]), len(ids["dev"]), len(ids["test"])) == (40_000, 200, 200)
    trained = zoo_training_questions()
    assert not any(e.question in trained for e in task.examples("dev"))
    assert not any(e.question in trained for e in task.examples("test"))
    questions = {s: {e.question for e in task.examples(s)} for s in ids}
    assert not questions["dev"] & questions["train"] and not questions["dev"] & questions["test"]


@pytest.mark.parametrize("override, count", [("task.n_test=400", 200), ("task.data_seed=1 task.n_test=200", 24)])
def test_arith_overrides_that_would_test_on_training_problems_are_refused(override, count, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict({"llama": "tiny-llama", "mistral": "tiny-mistral"}, *override.split(),
                                             "task.n_train=40000")))
    result = CliRunner().invoke(app, ["run", str(recipe), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2
    assert f"{count} of the test problems" in result.output and "the built-in tiny pair was trained on" in result.output
    assert not (tmp_path / "run").exists()


def test_a_dev_split_too_large_for_train_is_a_clear_error(random_pair):
    recipe = validate_recipe(recipe_dict(random_pair, "eval.dev_n=150", "task=gsm8k",
                                         "task.data_dir=tests/data/gsm8k"))
    with pytest.raises(Exception, match="eval.dev_n=150 is too large for task 'gsm8k': its train split has 64"):
        Experiment.build(recipe)
