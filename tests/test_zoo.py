"""The built-in tiny pair: shipped, offline, mismatched like Llama <-> Mistral, and as accurate as listed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from latentbridge.bridge.models import builtin_models, load_frozen, zoo_dir
from latentbridge.cli import app
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import BASE

cli = CliRunner()


@pytest.fixture(scope="module")
def listed() -> dict[str, dict]:
    result = cli.invoke(app, ["zoo", "list", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_the_pair_is_listed_with_accuracies_in_bounds(listed):
    llama, mistral = listed["tiny-llama"], listed["tiny-mistral"]
    assert llama["architecture"] == "LlamaForCausalLM" and mistral["architecture"] == "MistralForCausalLM"
    for model in (llama, mistral):
        assert 0.40 <= model["accuracy"] <= 0.95 and model["n_eval"] == 200
    assert abs(llama["accuracy"] - mistral["accuracy"]) >= 0.15
    # the mismatches a translator has to bridge
    assert llama["hidden_size"] != mistral["hidden_size"] and llama["num_layers"] != mistral["num_layers"]
    assert llama["rope_theta"] != mistral["rope_theta"]
    assert llama["vocab_size"] != mistral["vocab_size"] and llama["tokenizer"] != mistral["tokenizer"]


def test_tiny_llama_b_is_tiny_llama_s_geometry_without_its_facts(listed, tmp_path, monkeypatch):
    """tiny-llama-b: tiny-llama's architecture, width and very tokenizer, another seed, arith only; the
    harness reproduces its listed arith and facts accuracies, and on facts it is near chance."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe

    b, llama = listed["tiny-llama-b"], listed["tiny-llama"]
    for key in ("architecture", "hidden_size", "num_layers", "rope_theta", "vocab_size", "parameters"):
        assert b[key] == llama[key], key
    root = zoo_dir()
    assert (root / "tiny-llama-b" / "tokenizer.json").read_bytes() == (root / "tiny-llama" / "tokenizer.json").read_bytes()
    assert (root / "tiny-llama-b" / "model.safetensors").read_bytes() != (root / "tiny-llama" / "model.safetensors").read_bytes()
    assert b["facts_taught"] == "none" and b["facts_accuracy"] <= 0.14  # a constant guess scores at most 0.14
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    for task, key in (("arith", "accuracy"), ("facts", "facts_accuracy")):
        recipe = validate_recipe({**BASE, "task": {"name": task}, "models": {"source": "tiny-llama", "target": "tiny-llama-b"}})
        exp = Experiment.build(recipe)
        settings = EvalSettings(n=200, batch_size=50, max_new_tokens=96, stop=["\n\n"], systems=["target"])
        result = Evaluator(exp.bridge, exp.task, settings, tmp_path / task).evaluate(step=0)
        assert abs(result["systems"]["target"]["accuracy"] - b[key]) <= 0.01, (task, result["systems"]["target"])


def test_tokenizers_segment_differently():
    llama, mistral = load_frozen("tiny-llama"), load_frozen("tiny-mistral")
    text = "Tom has 123 apples and buys 45 more."
    a, b = llama.tokenizer.tokenize(text), mistral.tokenizer.tokenize(text)
    assert a != b
    assert "1" in a and "2" in a and "3" in a  # digits one by one
    assert llama.tokenizer.decode(llama.tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert mistral.tokenizer.decode(mistral.tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_accuracies_re_measured_from_the_shipped_weights(listed, tmp_path, monkeypatch):
    """The harness that evaluates every run, on the same 200 test problems, reproduces zoo list."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe

    recipe = validate_recipe({**BASE, "task": {"name": "arith"}, "models": {"source": "tiny-llama", "target": "tiny-mistral"}})
    exp = Experiment.build(recipe)
    settings = EvalSettings(n=200, batch_size=50, max_new_tokens=96, stop=["\n\n"], systems=["source", "target"])
    result = Evaluator(exp.bridge, exp.task, settings, tmp_path).evaluate(step=0)
    measured = {"tiny-llama": result["systems"]["source"]["accuracy"], "tiny-mistral": result["systems"]["target"]["accuracy"]}
    for name, accuracy in measured.items():
        assert 0.40 <= accuracy <= 0.95
        assert abs(accuracy - listed[name]["accuracy"]) <= 0.01, (name, accuracy)
    assert abs(measured["tiny-llama"] - measured["tiny-mistral"]) >= 0.15


def test_loading_needs_no_network_and_no_environment_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "LATENTBRIDGE_"))}
    code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from latentbridge.bridge.models import builtin_models, load_frozen\n"
        "for name, path in builtin_models().items():\n"
        "    AutoModelForCausalLM.from_pretrained(path); AutoTokenizer.from_pretrained(path); load_frozen(name)\n"
        "print(sorted(builtin_models()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['tiny-llama', 'tiny-llama-b', 'tiny-mistral']"


def test_shipped_size_is_at_most_10_mb():
    total = sum(p.stat().st_size for p in zoo_dir().rglob("*") if p.is_file())
    assert total <= 10 * 2**20, total
    assert set(builtin_models()) == {"tiny-llama", "tiny-mistral", "tiny-llama-b"}


def test_a_short_build_is_deterministic_and_loadable(tmp_path):
    from latentbridge.zoo.build import build_pair
    from latentbridge.zoo.specs import ZOO

    def shortened(spec):
        reading = spec.reading and dataclasses.replace(spec.reading, steps=3, induction_steps=2, passages=30, warmup=1)
        return dataclasses.replace(spec, steps=6, warmup=2, batch_size=8, reading=reading)

    short = tuple(shortened(s) for s in ZOO)
    assert [s.reading is not None for s in ZOO] == [True, True, False]  # the pair reads passages, tiny-llama-b not
    stages = []
    infos = [build_pair(tmp_path / run, seed=3, specs=short, n_train=200, n_test=10, isolate=run == "b",
                        progress=lambda stage, done, total: stages.append(stage)) for run in ("a", "b")]
    for name in ("tiny-llama", "tiny-mistral"):
        a = (tmp_path / "a" / name / "model.safetensors").read_bytes()
        assert a == (tmp_path / "b" / name / "model.safetensors").read_bytes()  # in-process == subprocess
        model = load_frozen(str(tmp_path / "a" / name))
        assert model.num_layers == {"tiny-llama": 4, "tiny-mistral": 3}[name]
        assert 0.0 <= infos[0]["models"][name]["accuracy"] <= 1.0
    assert {"data", "train tiny-llama", "read tiny-llama", "train tiny-mistral", "read tiny-mistral",
            "train tiny-llama-b"} <= set(stages) and "read tiny-llama-b" not in stages
    # tiny-llama-b reads with tiny-llama's very tokenizer; every model's arith accuracy is given per subset
    tokenizer = (tmp_path / "a" / "tiny-llama" / "tokenizer.json").read_bytes()
    assert (tmp_path / "a" / "tiny-llama-b" / "tokenizer.json").read_bytes() == tokenizer
    for name, model in infos[0]["models"].items():
        parts = model["arith_by_subset"]
        assert sum(p["n"] for p in parts.values()) == 10, name


def test_zoo_build_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = cli.invoke(app, ["zoo", "build", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_on_facts_the_source_knows_and_the_target_guesses(listed, tmp_path, monkeypatch):
    """Re-measured through the harness on the 200 facts test questions: tiny-llama learned these
    entities, tiny-mistral did not (it learned only the answer format, from other entities): it answers
    in format, and wrongly."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe
    from latentbridge.zoo.facts import N_VALUES

    recipe = validate_recipe({**BASE, "task": {"name": "facts"}, "models": {"source": "tiny-llama", "target": "tiny-mistral"}})
    exp = Experiment.build(recipe)
    settings = EvalSettings(n=200, batch_size=50, max_new_tokens=96, stop=["\n\n"], systems=["source", "target"])
    result = Evaluator(exp.bridge, exp.task, settings, tmp_path).evaluate(step=0)
    source, target = result["systems"]["source"], result["systems"]["target"]
    assert source["accuracy"] >= 0.8 and target["accuracy"] <= 2.0 / N_VALUES
    assert target["invalid"] <= 0.1 * target["n"]  # it writes '#### N': the format is not what it lacks
    assert abs(source["accuracy"] - listed["tiny-llama"]["facts_accuracy"]) <= 0.01
    assert abs(target["accuracy"] - listed["tiny-mistral"]["facts_accuracy"]) <= 0.01


def test_passages_figures_re_measured_through_the_task(listed, tmp_path, monkeypatch):
    """zoo list's passages figures (the builder's own evaluation, with the context and the question only)
    are what the harness measures through the task: the skyline reads what the builder's 'with context'
    prompt holds, the target what its 'question only' prompt holds (one format on both sides)."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    mistral = listed["tiny-mistral"]["passages"]
    assert mistral["n"] == 200 and mistral["question_only"] <= 0.14  # without the context: at most a guess
    # the pair reads a passage: far above a guess with the context (the skyline of the context split)
    assert mistral["with_context"] >= 0.7 and listed["tiny-llama"]["passages"]["with_context"] >= 0.3
    assert listed["tiny-llama"]["passages"]["question_only"] <= 0.14
    recipe = validate_recipe({**BASE, "task": {"name": "passages"}, "translator": {"name": "kv_translate"},
                              "models": {"source": "tiny-llama", "target": "tiny-mistral"}})
    exp = Experiment.build(recipe)
    settings = EvalSettings(n=200, batch_size=50, max_new_tokens=96, stop=["\n\n"], systems=["target", "skyline"])
    result = Evaluator(exp.bridge, exp.task, settings, tmp_path).evaluate(step=0)["systems"]
    assert abs(result["target"]["accuracy"] - mistral["question_only"]) <= 0.01, result["target"]
    assert abs(result["skyline"]["accuracy"] - mistral["with_context"]) <= 0.01, result["skyline"]


def test_induction_rows_repeat_a_random_sequence_with_the_loss_on_the_repeat():
    from transformers import PreTrainedTokenizerFast

    from latentbridge.zoo.train import InductionRows

    tokenizer = PreTrainedTokenizerFast.from_pretrained(builtin_models()["tiny-llama"])
    rows = InductionRows(tokenizer, seed=0)
    special = set(tokenizer.all_special_ids)
    drawn = [rows.row() for _ in range(50)]
    for ids, weights in drawn:
        n = (len(ids) - 1) // 2
        assert 8 <= n <= 60 and ids[0] == tokenizer.bos_token_id and ids[1 : n + 1] == ids[n + 1 :]
        assert not special & set(ids[1:])
        assert weights == [0.0] * (n + 1) + [1.0] * n  # the first copy is read, the repeat is learned
    assert len({tuple(ids) for ids, _ in drawn}) == 50
    again = InductionRows(tokenizer, seed=0)
    assert [again.row() for _ in range(3)] == drawn[:3]  # one stream per seed
    assert InductionRows(tokenizer, seed=1).row() != drawn[0]


def test_an_induction_warm_up_opens_the_run_and_then_rides_along(monkeypatch):
    """``induction_steps`` steps of repeated sequences only, then every batch its examples plus
    ``induction_share`` of its size in repeated sequences; the schedule spans both."""
    from transformers import PreTrainedTokenizerFast

    from latentbridge.zoo.specs import LLAMA
    from latentbridge.zoo.train import make_model, train_model

    tokenizer = PreTrainedTokenizerFast.from_pretrained(builtin_models()["tiny-llama"])
    spec = dataclasses.replace(LLAMA, steps=3, warmup=1, batch_size=4, induction_steps=2, induction_share=0.5)
    texts = [f"Question: What is {i} plus 2?\nAnswer: {i + 2}" for i in range(12)]
    prompts = [t.split(" ", 1)[0] for t in texts]
    model = make_model(spec, tokenizer, 0)
    seen, forward = [], model.forward
    monkeypatch.setattr(model, "forward", lambda *a, input_ids, **k: seen.append(input_ids.clone()) or forward(
        *a, input_ids=input_ids, **k))
    totals = []
    losses = train_model(model, tokenizer, texts, prompts, spec, 0, progress=lambda _, done, total: totals.append(total))
    assert len(losses) == len(seen) == 5 and set(totals) == {5}

    def repeated(row) -> bool:
        ids = [int(i) for i in row if int(i) != tokenizer.pad_token_id]
        n = (len(ids) - 1) // 2
        return len(ids) == 2 * n + 1 and ids[1 : n + 1] == ids[n + 1 :]

    for batch in seen[:2]:
        assert batch.shape[0] == 4 and all(repeated(r) for r in batch)
    bos = tokenizer.bos_token_id
    for batch in seen[2:]:
        assert batch.shape[0] == 6 and [repeated(r) for r in batch] == [False] * 4 + [True] * 2
        assert all(int(r[0]) == bos for r in batch)


def test_a_reading_stage_replays_the_first_warms_up_induction_then_reads_passages(monkeypatch):
    """Each step: ``replay`` first-stage examples drawn at random; in the warm-up the rest repeated
    sequences, after it the passages in length-bucketed batches (each once before any repeats) and
    ``induction_rows`` repeated sequences; a passage's prompt gets no loss; the schedule spans both."""
    from transformers import PreTrainedTokenizerFast

    from latentbridge.zoo import train as zoo_train
    from latentbridge.zoo.specs import LLAMA, ReadingStage

    tokenizer = PreTrainedTokenizerFast.from_pretrained(builtin_models()["tiny-llama"])
    stage = ReadingStage(steps=4, induction_steps=2, lr=1e-3, passages=6, batch_size=6, replay=2,
                         induction_rows=1, warmup=1)
    spec = dataclasses.replace(LLAMA, reading=stage)
    first = [(f"Question: What is {i} plus 2?\nAnswer: {i + 2}", f"Question: What is {i} plus 2?\nAnswer:", 0.5)
             for i in range(6)]
    passages = [(f"Question: Kim{i}: {i}. Kim{i}?\nAnswer: {i}", f"Question: Kim{i}: {i}. Kim{i}?\nAnswer:")
                for i in range(6)]
    seen, lrs = [], []
    real_step = zoo_train._train_step

    def spy(model, opt, rows, pad):
        seen.append(list(rows))
        lrs.append(opt.param_groups[0]["lr"])
        return real_step(model, opt, rows, pad)

    monkeypatch.setattr(zoo_train, "_train_step", spy)
    model = zoo_train.make_model(LLAMA, tokenizer, 0)
    totals = []
    losses = zoo_train.train_reading(model, tokenizer, [(first, 2), (first[:1], 0)], passages, spec, 0,
                                     progress=lambda _, done, total: totals.append(total))
    assert len(losses) == len(seen) == 6 and set(totals) == {6}
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1]  # one schedule over warm-up and passages

    def kind(ids, weights) -> str:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        n = (len(ids) - 1) // 2
        if len(ids) == 2 * n + 1 and ids[1 : n + 1] == ids[n + 1 :] and "Question" not in text:
            return "repeat"
        return "passage" if "Kim" in text else "first"

    def prompt_weight(ids, weights, prompts) -> float:
        prompt = next(p for _, p, *_ in prompts if tokenizer.decode(ids, skip_special_tokens=True).startswith(p))
        return weights[len(tokenizer(prompt)["input_ids"]) - 1]

    for rows in seen[:2]:
        assert [kind(*r) for r in rows] == ["first"] * 2 + ["repeat"] * 4
    read = []
    for rows in seen[2:]:
        assert [kind(*r) for r in rows] == ["first"] * 2 + ["passage"] * 3 + ["repeat"]
        read += [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in rows[2:5]]
        for ids, weights in rows[:2]:
            assert prompt_weight(ids, weights, first) == 0.5 and weights[-1] == 1.0
        for ids, weights in rows[2:5]:
            assert prompt_weight(ids, weights, passages) == 0.0 and weights[-1] == 1.0
    assert sorted(read[:6]) == sorted(t for t, _ in passages)  # every passage once before any again
    assert read[:6] != [t for t, _ in passages]  # in a shuffled order


def test_a_reading_stage_leaves_room_for_passages_and_round_trips_through_a_dict():
    from latentbridge.zoo.specs import LLAMA, ModelSpec, ReadingStage

    with pytest.raises(ValueError, match="room for passages"):
        ReadingStage(steps=1, induction_steps=1, lr=1e-3, passages=1, batch_size=8, replay=4, induction_rows=4)
    spec = dataclasses.replace(LLAMA, reading=ReadingStage(steps=10, induction_steps=5, lr=1e-3, passages=100))
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ModelSpec.from_dict(LLAMA.to_dict()) == LLAMA


def test_a_reading_stage_refuses_too_few_passages_or_an_empty_replayed_group():
    """Both would otherwise hang (no batch of passages can be formed) or fail deep in a random draw."""
    from transformers import PreTrainedTokenizerFast

    from latentbridge.zoo.specs import LLAMA, ReadingStage
    from latentbridge.zoo.train import make_model, train_reading

    tokenizer = PreTrainedTokenizerFast.from_pretrained(builtin_models()["tiny-llama"])
    model = make_model(LLAMA, tokenizer, 0)
    spec = dataclasses.replace(LLAMA, reading=ReadingStage(steps=2, induction_steps=1, lr=1e-3, passages=3,
                                                           batch_size=6, replay=1, induction_rows=1))
    first = [("Question: 1 plus 1?\nAnswer: 2", "Question: 1 plus 1?\nAnswer:", 1.0)]
    passages = [(f"Question: Kim{i}: {i}. Kim{i}?\nAnswer: {i}", f"Question: Kim{i}: {i}. Kim{i}?\nAnswer:")
                for i in range(3)]
    with pytest.raises(ValueError, match="3 passages cannot fill a batch's 4"):
        train_reading(model, tokenizer, [(first, 1)], passages, spec, 0)
    with pytest.raises(ValueError, match="replayed group .* is empty"):
        train_reading(model, tokenizer, [(first, 1), ([], 1)], passages * 2, spec, 0)
