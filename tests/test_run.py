"""Training end to end on the tiny random pair, through the real CLI and through the Runner."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.config.recipe import load_recipe
from latentbridge.train.data_order import DataOrder
from latentbridge.train.runner import Runner
from latentbridge.train.schedule import lr_factor

from .helpers import make_experiment, make_recipe, recipe_dict

cli = CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def recipe_file(random_pair, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("# tiny test recipe\n" + yaml.safe_dump(recipe_dict(random_pair)))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_eval_summarize_through_the_cli(recipe_file, tmp_path):
    run_dir = tmp_path / "run"
    result = cli.invoke(app, ["run", str(recipe_file), f"run_dir={run_dir}"])
    assert result.exit_code == 0, result.output
    for name in ("recipe.yaml", "run.json", "metrics.jsonl", "speed.jsonl", "summary.json",
                 "eval_samples_dev_step_2.jsonl", "eval_samples_dev_step_4.jsonl", "eval_samples_test_step_4.jsonl",
                 "translator.safetensors",
                 "translator.json", "best/translator.safetensors", "best/translator.json"):
        assert (run_dir / name).is_file(), name
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [2, 4]
    for m in metrics:
        assert m["loss/nll"] > 0 and m["weight/nll"] == 1.0 and m["lr"] >= 0 and m["grad_norm"] >= 0
    assert metrics[0]["lr"] > metrics[1]["lr"]  # cosine decay (the last step's factor is 0)
    assert all(s["examples_per_s"] > 0 for s in read_jsonl(run_dir / "speed.jsonl"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [2, 4]
    assert {e["split"] for e in summary["evaluations"]} == {"dev"} and summary["best"]["split"] == "dev"
    assert summary["test"]["final"]["split"] == "test" and summary["test"]["final"]["step"] == 4
    assert summary["test"]["best"]["weights"] == "best"
    if summary["best"]["step"] != 4:  # the dev-chosen weights get their own test evaluation
        assert (run_dir / f"eval_samples_test_best_step_{summary['best']['step']}.jsonl").is_file()
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["status"] == "finished"
    assert run_info["plugins"]["translator:linear"]["distribution"] == "latentbridge"
    assert run_info["translator"]["parameters"] > 0
    assert load_recipe(run_dir / "recipe.yaml").to_dict()["train"]["steps"] == 4  # resolved, and valid
    for word in ("source", "target", "bridged", "shuffled", "null", "relay", "accuracy [95% CI]",
                 "test, final weights", "information flow: bridged − shuffled", "best on dev: step"):
        assert word in result.stdout

    again = cli.invoke(app, ["run", str(recipe_file), f"run_dir={run_dir}"])
    assert again.exit_code == 2 and "already holds a run" in again.stderr

    evaluated = cli.invoke(app, ["eval", str(run_dir), "--step", "final"])
    assert evaluated.exit_code == 0, evaluated.output
    first = (run_dir / "eval_samples_test_step_4.jsonl").read_text()
    assert (run_dir / "eval_final" / "eval_samples_test_step_4.jsonl").read_text() == first  # same weights, same file

    summarized = cli.invoke(app, ["summarize", str(run_dir), "--json"])
    assert summarized.exit_code == 0, summarized.output
    rows = json.loads(summarized.stdout)
    best = [("test", summary["best"]["step"])] if summary["best"]["step"] != 4 else []
    assert [(r["split"], r["step"]) for r in rows] == [("dev", 2), ("dev", 4), *best, ("test", 4)]
    assert rows[-1]["systems"]["bridged"]["n"] == 6


def test_summarize_orders_steps_numerically(tmp_path):
    record = {"question": "q", "gold_full_text": "#### 1", "gold_extracted": "1", "index": 0}
    for step in (100, 20, 3):
        line = {**record, "eval_step": step, "bridged_full": "#### 1", "bridged_extracted": "1", "bridged_correct": True}
        (tmp_path / f"eval_samples_dev_step_{step}.jsonl").write_text(json.dumps(line) + "\n")
    result = cli.invoke(app, ["summarize", str(tmp_path), "--json"])
    assert [r["step"] for r in json.loads(result.stdout)] == [3, 20, 100]
    missing = cli.invoke(app, ["summarize", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


def test_best_is_a_true_copy_not_an_alias(random_pair, tmp_path, monkeypatch):
    exp = make_experiment(random_pair, "train.steps=4", "eval.every=1", "eval.n=2")
    runner = Runner(exp, tmp_path)
    snapshots = {}
    original = Runner.evaluate

    def evaluate(self, step):
        snapshots[step] = {k: v.clone() for k, v in self.exp.translator.state_dict().items()}
        return original(self, step)

    monkeypatch.setattr(Runner, "evaluate", evaluate)
    state = runner.run()
    best = load_file(str(tmp_path / "best" / "translator.safetensors"))
    final = load_file(str(tmp_path / "translator.safetensors"))
    for key, value in best.items():
        assert torch.equal(value, snapshots[state.best_step][key])
    if state.best_step != 4:
        assert any(not torch.equal(best[k], final[k]) for k in best)
    assert json.loads((tmp_path / "best" / "translator.json").read_text())["step"] == state.best_step


def test_early_stopping_with_patience(random_pair, tmp_path, monkeypatch):
    exp = make_experiment(random_pair, "train.steps=10", "eval.every=1", "eval.n=2", "eval.patience=2",
                          "eval.systems=[bridged]")
    runner = Runner(exp, tmp_path)
    accuracies = iter([0.5, 0.4, 0.3, 0.9, 0.9])
    monkeypatch.setattr(runner.evaluators["dev"], "evaluate", lambda step: {
        "step": step, "split": "dev", "systems": {"bridged": {"accuracy": next(accuracies)}}})
    state = runner.run()
    assert state.stopped_early and state.step == 3 and state.best_step == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["test"]["final"]["step"] == 3 and summary["test"]["best"]["step"] == 1


def test_selection_reads_dev_and_never_test(random_pair, tmp_path, monkeypatch):
    """best/, the peak and early stopping follow dev; test is evaluated once per weights, at the end."""
    exp = make_experiment(random_pair, "train.steps=4", "eval.every=1", "eval.n=2", "eval.dev_n=2",
                          "eval.systems=[bridged]")
    runner = Runner(exp, tmp_path)
    dev_accuracy = {1: 0.2, 2: 0.9, 3: 0.1, 4: 0.3}  # dev says step 2
    calls: list[tuple[str, int, str | None]] = []
    real_test = runner.evaluators["test"].evaluate

    def dev(step):
        calls.append(("dev", step, None))
        return {"step": step, "split": "dev", "systems": {"bridged": {"accuracy": dev_accuracy[step]}}}

    def test(step, label=None):
        calls.append(("test", step, label))
        return real_test(step, label)

    monkeypatch.setattr(runner.evaluators["dev"], "evaluate", dev)
    monkeypatch.setattr(runner.evaluators["test"], "evaluate", test)
    state = runner.run()
    assert state.best_step == 2 and state.best_accuracy == 0.9
    assert calls == [("dev", 1, None), ("dev", 2, None), ("dev", 3, None), ("dev", 4, None),
                     ("test", 4, None), ("test", 2, "best")]
    assert json.loads((tmp_path / "best" / "translator.json").read_text())["step"] == 2
    records = [json.loads(x) for x in (tmp_path / "eval_samples_test_best_step_2.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"test"}
    test_ids = {e.id for e in exp.task.examples("test")}
    assert {r["id"] for r in records} <= test_ids
    assert not test_ids & {e.id for e in exp.task.examples("dev")}


def test_training_is_deterministic_and_models_stay_frozen(random_pair, tmp_path):
    weights = []
    for run in ("a", "b"):
        exp = make_experiment(random_pair, "eval.every=100", "eval.n=2", "eval.systems=[bridged]")
        target_before = {k: v.clone() for k, v in exp.bridge.target.model.state_dict().items()}
        for frozen in (exp.bridge.source.model, exp.bridge.target.model):
            assert not frozen.training
            assert not any(p.requires_grad for p in frozen.parameters())
        Runner(exp, tmp_path / run).run()
        for k, v in exp.bridge.target.model.state_dict().items():
            assert torch.equal(v, target_before[k])
        weights.append((tmp_path / run / "translator.safetensors").read_bytes())
        assert (tmp_path / run / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()
    assert weights[0] == weights[1]


def test_gradient_accumulation_matches_one_big_batch(random_pair, tmp_path):
    results = []
    for overrides in (["train.batch_size=4", "train.grad_accum=1"], ["train.batch_size=2", "train.grad_accum=2"]):
        exp = make_experiment(random_pair, *overrides, "train.steps=2", "eval.every=100", "eval.n=2",
                              "eval.systems=[bridged]", "objectives.nll.reduction=example", "train.max_grad_norm=null")
        Runner(exp, tmp_path / overrides[0]).run()
        results.append(exp.translator.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-6)


def test_translator_width_mismatch_is_a_clear_error(random_pair):
    from latentbridge.errors import LatentBridgeError

    with pytest.raises(LatentBridgeError, match="translator.d_src: is 7 but .* has hidden size 32"):
        make_experiment(random_pair, "translator.d_src=7")
    with pytest.raises(LatentBridgeError, match="source_layer: 9 is out of range"):
        make_experiment(random_pair, "models.source_layer=9")


def test_lr_schedule():
    f = [lr_factor(s, total=10, warmup=2, schedule="cosine") for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0 and f[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[1:], f[2:], strict=False))
    lin = [lr_factor(s, total=5, warmup=0, schedule="linear", min_ratio=0.2) for s in range(5)]
    assert lin == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert lr_factor(7, total=10, warmup=0, schedule="constant") == 1.0


def test_data_order_is_seeded_resumable_and_covers_each_epoch():
    order = DataOrder(7, seed=3)
    first = order.take(7)
    assert sorted(first) == list(range(7))
    state = order.state()
    rest = order.take(10)
    resumed = DataOrder(7, seed=3, **state)
    assert resumed.take(10) == rest
    assert DataOrder(7, seed=3).take(7) == first
    assert DataOrder(7, seed=4).take(7) != first


def test_recipe_dtype_reaches_the_models(random_pair):
    exp = make_experiment(random_pair, "models.dtype=bfloat16", "eval.n=2")
    assert exp.bridge.target.dtype == torch.bfloat16 and exp.bridge.source.dtype == torch.bfloat16
    assert next(exp.translator.parameters()).dtype == torch.float32  # fp32 master weights
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:2]]
    soft = exp.bridge.soft_tokens(prompts)
    inputs = exp.bridge.bridged_inputs(soft, prompts, with_answer=True)
    assert inputs.inputs_embeds.dtype == torch.bfloat16
    make_recipe(random_pair)  # the helper itself stays valid


def test_zero_steps_evaluates_the_untrained_translator(random_pair, tmp_path):
    exp = make_experiment(random_pair, "translator={name: identity, projection: linear}", "train.steps=0",
                          "eval.n=2", "eval.systems=[bridged]")
    state = Runner(exp, tmp_path).run()
    assert state.step == 0 and [e["step"] for e in state.evaluations] == [0]
    assert (tmp_path / "eval_samples_dev_step_0.jsonl").is_file() and (tmp_path / "eval_samples_test_step_0.jsonl").is_file()


def test_nothing_to_train_is_a_clear_error(random_pair, tmp_path):
    from latentbridge.errors import LatentBridgeError

    exp = make_experiment(random_pair, "translator={name: identity, projection: none}", "eval.n=2",
                          "models.target=" + str(random_pair["llama"]))
    with pytest.raises(LatentBridgeError, match="no trainable parameters; use train.steps=0"):
        Runner(exp, tmp_path)


def test_autocast_only_on_cuda_with_a_16_bit_dtype():
    import contextlib

    from latentbridge.runtime.precision import autocast

    assert isinstance(autocast(torch.device("cpu"), torch.bfloat16), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cuda"), torch.float32), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cuda"), torch.bfloat16, enabled=False), contextlib.nullcontext)
    import warnings

    with warnings.catch_warnings():  # on a machine without CUDA, torch warns that it will not autocast
        warnings.simplefilter("ignore")
        on = autocast(torch.device("cuda"), torch.bfloat16)
    assert isinstance(on, torch.autocast) and on.fast_dtype == torch.bfloat16
