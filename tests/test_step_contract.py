"""The plugin contract as an outside author meets it: shared quantities through a hook, `needs` enforced,
a documented BuildContext, typed step fields, the task's own scoring, and run.json after a resume."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch
from typer.testing import CliRunner

from latentbridge import (
    BuildContext,
    Objective,
    PluginError,
    Soft,
    StepContext,
    Task,
    TaskConfig,
    Text,
    hookimpl,
)
from latentbridge.api.context import StepQuantity
from latentbridge.api.task import Example
from latentbridge.bridge.build import Experiment
from latentbridge.cli import app
from latentbridge.config.recipe import validate_recipe
from latentbridge.errors import ConfigError
from latentbridge.registry import host
from latentbridge.train.runner import Runner

from .helpers import recipe_dict

FAST = ("train.steps=2", "train.log_every=1", "eval.every=2", "eval.n=4", "eval.max_new_tokens=4")
SEEN: dict[str, object] = {}


class QuestionLength(Objective):
    """Reads a quantity a plugin registered (this question's length) and everything BuildContext offers."""

    name = "question_length"
    needs = frozenset({"question_length", "logits"})

    def __init__(self, config, ctx: BuildContext):
        super().__init__(config, ctx)
        SEEN["ctx"] = ctx

    def compute(self, step: StepContext) -> torch.Tensor:
        lengths = step.get("question_length")
        SEEN["lengths"] = lengths
        SEEN["fields"] = {f: getattr(step, f) is not None for f in step.FIELDS}
        return step.soft.float().pow(2).mean() * 0 + step.logits.float().mean() * 0 + lengths.float().mean() * 0


class Greedy(Objective):
    """Reads a quantity it did not declare."""

    name = "greedy"
    needs = frozenset({"logits"})

    def compute(self, step: StepContext) -> torch.Tensor:
        return step.get("teacher_logits").sum() * 0


class Misspelt(Objective):
    """Declares a quantity nobody provides."""

    name = "misspelt"
    needs = frozenset({"logitz"})

    def compute(self, step: StepContext) -> torch.Tensor:
        return step.soft.sum() * 0


def plugin_module():
    module = types.ModuleType("contract_plugin")

    def register_step_quantities(register):
        register(StepQuantity("question_length", lambda step: torch.tensor([len(t.question_ids()) for t in step.texts]),
                              "b: the number of this question's tokens"))

    def register_objectives(register):
        for cls in (QuestionLength, Greedy, Misspelt):
            register(cls)

    module.register_step_quantities = hookimpl(register_step_quantities)
    module.register_objectives = hookimpl(register_objectives)
    return module


@pytest.fixture
def registry(monkeypatch):
    loaded = host.Registry.load(autoload=False, extra=[plugin_module()])
    monkeypatch.setattr(host, "_REGISTRY", loaded)
    return loaded


def test_a_plugin_quantity_reaches_an_objective_and_build_context_is_complete(random_pair, registry, tmp_path):
    recipe = validate_recipe(recipe_dict(random_pair, *FAST, "objectives.question_length.weight=1"), registry)
    exp = Experiment.build(recipe, registry)
    Runner(exp, tmp_path / "run").run()
    texts = [exp.bridge.target_encoder.target_text(exp.task.prompt(e)) for e in exp.task.examples("train")]
    assert set(SEEN["lengths"].tolist()) <= {len(t.question_ids()) for t in texts}
    assert all(SEEN["fields"][f] for f in ("soft", "inputs", "texts", "examples", "prompts", "source_hidden", "seeds",
                                            "target", "source", "translator", "relayout", "generator"))
    ctx: BuildContext = SEEN["ctx"]
    target = exp.bridge.target
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(ctx.target_embed(ids), target.model.get_input_embeddings()(ids))
    assert tuple(ctx.target_embedding_matrix.shape) == (target.vocab_size, target.hidden_size)
    assert (ctx.d_src, ctx.d_tgt, ctx.k) == (exp.bridge.source.hidden_size, target.hidden_size, exp.translator.k)
    assert ctx.batch_size == recipe.train.batch_size and ctx.world_size == 1
    assert ctx.translator is exp.translator and ctx.target_rms == exp.translator.config.target_rms
    assert ctx.source_tokenizer is exp.bridge.source.tokenizer and ctx.target_tokenizer is target.tokenizer
    assert not hasattr(ctx, "extra")


def test_reading_an_undeclared_quantity_is_refused(random_pair, registry, tmp_path):
    recipe = validate_recipe(recipe_dict(random_pair, *FAST, "objectives.greedy.weight=1"), registry)
    with pytest.raises(PluginError, match="'teacher_logits' is not in this objective's needs \\(logits\\)"):
        Runner(Experiment.build(recipe, registry), tmp_path / "run").run()


def test_a_need_nobody_provides_is_a_recipe_problem_with_a_did_you_mean(random_pair, registry, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_recipe(recipe_dict(random_pair, "objectives.misspelt.weight=1"), registry)
    assert "objectives.misspelt: needs 'logitz', which no plugin provides (did you mean 'logits'?)" in str(err.value)
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe_dict(random_pair, "objectives.misspelt.weight=1")))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "needs 'logitz'" in result.output


def test_list_plugins_and_describe_show_quantities(registry):
    rows = json.loads(CliRunner().invoke(app, ["list-plugins", "--json", "--kind", "quantity"]).stdout)
    names = {r["name"]: r for r in rows}
    assert {"logits", "teacher_logits", "question_chunks", "question_length"} <= names.keys()
    assert names["question_length"]["module"] == "contract_plugin"
    both = CliRunner().invoke(app, ["describe", "question_length"])
    assert both.exit_code == 2 and "names several plugins (objective, quantity); add --kind" in both.output
    assert "this question's tokens" in CliRunner().invoke(app, ["describe", "question_length", "--kind",
                                                                "quantity"]).output
    assert "needs: logits, question_length" in CliRunner().invoke(app, ["describe", "question_length", "--kind",
                                                                       "objective"]).output


def test_soft_and_text_are_public():
    assert Soft() == Soft() and Text([1, 2], supervised=True).supervised


# -- the task owns its scoring ----------------------------------------------------------------------


class Shout(Task):
    """Answers are words: correct when the output names the gold word, in capitals, after 'ANSWER'."""

    name = "shout"
    Config = TaskConfig
    filters = ("exact", "anywhere")

    def load(self, split):
        words = ["apple", "pear", "plum", "fig"]
        n = 40 if split == "train" else 8
        return [Example(f"{split}-{i}", f"Say {words[i % 4]}.", f"ANSWER {words[i % 4].upper()}") for i in range(n)]

    def extract_answer(self, generated, filter):
        if filter == "exact":
            return generated.split("ANSWER ", 1)[1].strip() if "ANSWER " in generated else None
        found = [w for w in generated.split() if w.isupper()]
        return found[-1] if found else None

    def gold_answer(self, example):
        return example.answer.split()[-1]


def test_the_harness_scores_with_the_tasks_own_rules(random_pair, tmp_path, monkeypatch):
    from latentbridge.eval.harness import EvalSettings, Evaluator

    module = types.ModuleType("shout_plugin")
    module.register_tasks = hookimpl(lambda register: register(Shout))
    loaded = host.Registry.load(autoload=False, extra=[module])
    monkeypatch.setattr(host, "_REGISTRY", loaded)
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = Experiment.build(validate_recipe(recipe_dict(random_pair, "task=shout"), loaded), loaded)
    evaluator = Evaluator(exp.bridge, exp.task, EvalSettings(4, 4, 4, [], ["target", "bridged"]), tmp_path, use_cache=False)
    outputs = ["ANSWER APPLE", "the PEAR", "ANSWER plum", "#### 7"]
    records = evaluator.records(1, outputs)
    assert [r["bridged_correct"] for r in records] == [True, False, False, False]
    assert [r["bridged_correct_anywhere"] for r in records] == [True, True, False, False]
    assert [r["gold_extracted"] for r in records] == ["APPLE", "PEAR", "PLUM", "FIG"]
    assert records[0]["primary_filter"] == "exact"


def test_gsm8k_summaries_report_strict_and_flexible(random_pair, tmp_path, monkeypatch):
    from latentbridge.eval.harness import EvalSettings, Evaluator
    from latentbridge.eval.summary import summarize_records

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = Experiment.build(validate_recipe(recipe_dict(random_pair)))
    evaluator = Evaluator(exp.bridge, exp.task, EvalSettings(3, 4, 4, [], ["bridged"]), tmp_path, use_cache=False)
    golds = [exp.task.gold_answer(e) for e in evaluator.items]
    outputs = [f"so #### {golds[0]}", f"it is {golds[1]}", "#### -1"]
    summary = summarize_records(evaluator.records(1, outputs))["systems"]["bridged"]
    assert summary["accuracy"] == pytest.approx(1 / 3)
    assert summary["by_filter"] == {"strict-match": pytest.approx(1 / 3), "flexible-extract": pytest.approx(2 / 3)}


# -- run.json after a failed run is resumed ---------------------------------------------------------


def test_a_failed_then_resumed_run_keeps_no_stale_error(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = Experiment.build(validate_recipe(recipe_dict(random_pair, "train.steps=4", "eval.every=4", "eval.n=4",
                                                       "checkpoint.every=1")))
    nll = exp.objectives["nll"]
    original = type(nll).compute
    calls = {"n": 0}

    def flaky(self, step):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("flaky")
        return original(self, step)

    monkeypatch.setattr(type(nll), "compute", flaky)
    with pytest.raises(PluginError):
        Runner(exp, tmp_path / "run").run()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and info["step"] == 2 and "flaky" in info["error"]
    Runner(exp, tmp_path / "run").run(resume=True)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished" and info["final_step"] == 4
    assert "error" not in info and "step" not in info, info
    assert info["resumed_from"] == 2


def test_build_context_has_documented_fields_only():
    names = {f.name for f in dataclasses.fields(BuildContext)}
    assert "extra" not in names
    assert {"target_embed", "target_embedding_matrix", "batch_size", "translator", "source_tokenizer"} <= names
