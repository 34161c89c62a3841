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


def test_arith_names_the_masked_twins_of_training_questions_in_every_record(tmp_path, monkeypatch):
    """arith's test items are ``twin`` (equal to a training question once names are masked: 119 of 200, as
    benchmarks/results/arith_overlap.md counts) or ``fresh``; every record names its subset, and every
    system's summary gives its accuracy on each, which adds up to the whole."""
    from latentbridge.api.task import DEV_SIZE
    from latentbridge.eval.harness import EvalSettings, Evaluator
    from latentbridge.zoo.arith import masked

    task = Arith(ArithConfig())
    task.dev_size = DEV_SIZE
    subsets = task.subsets("test")
    train = {masked(e.question) for e in task.examples("train")}
    assert sum(v == "twin" for v in subsets.values()) == 119 and len(subsets) == 200
    assert all((masked(e.question) in train) == (subsets[e.id] == "twin") for e in task.examples("test"))
    assert task.subsets("train") == {}
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = Experiment.build(validate_recipe({**recipe_dict({"llama": "tiny-llama", "mistral": "tiny-mistral"}),
                                            "task": {"name": "arith"}}))
    settings = EvalSettings(n=20, batch_size=10, max_new_tokens=48, stop=["\n\n"], systems=["target", "bridged"])
    result = Evaluator(exp.bridge, exp.task, settings, tmp_path).evaluate(step=0)
    records = [json.loads(x) for x in (tmp_path / "eval_samples_test_step_0.jsonl").read_text().splitlines()]
    assert [r["subset"] for r in records] == [subsets[r["id"]] for r in records]
    target = result["systems"]["target"]
    parts = target["by_subset"]
    assert sum(p["n"] for p in parts.values()) == 20 and sum(p["correct"] for p in parts.values()) == target["correct"]
    for name, part in parts.items():
        mine = [r for r in records if r["subset"] == name]
        assert part["correct"] == sum(r["target_correct"] for r in mine)
