"""The evaluation harness: every item reported, baselines once, determinism, and no answer leakage."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from latentbridge.eval.harness import EvalSettings, Evaluator
from latentbridge.eval.stats import (
    answer_spread,
    echoes_question,
    mcnemar_exact,
    sign_flip_exact,
    wilson_interval,
)
from latentbridge.eval.systems import SYSTEMS

from .helpers import make_experiment


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def evaluator(exp, out_dir, systems=SYSTEMS, n=6, **kwargs):
    return Evaluator(
        exp.bridge, exp.task, EvalSettings(n=n, batch_size=4, max_new_tokens=6, stop=["\n\n"], systems=list(systems)),
        out_dir, **kwargs,
    )


def test_records_have_every_item_and_every_system(random_pair, tmp_path):
    exp = make_experiment(random_pair)
    result = evaluator(exp, tmp_path).evaluate(step=3)
    lines = (tmp_path / "eval_samples_step_3.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for index, line in enumerate(lines):
        record = json.loads(line)
        assert record["eval_step"] == 3 and record["index"] == index
        for key in ("question", "gold_full_text", "gold_extracted"):
            assert record[key]
        for system in SYSTEMS:
            assert isinstance(record[f"{system}_full"], str)
            assert isinstance(record[f"{system}_correct"], bool)
    assert set(result["systems"]) == set(SYSTEMS)


def test_a_system_not_run_is_null_never_a_shorter_file(random_pair, tmp_path):
    exp = make_experiment(random_pair)
    result = evaluator(exp, tmp_path, systems=["bridged", "target"]).evaluate(step=1)
    records = [json.loads(x) for x in (tmp_path / "eval_samples_step_1.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        for system in ("source", "relay"):
            assert record[f"{system}_full"] is None
            assert record[f"{system}_extracted"] is None
            assert record[f"{system}_correct"] is None
    assert result["systems"]["source"] is None and result["systems"]["relay"] is None


def test_baselines_generated_once_and_cached_on_disk(random_pair, tmp_path, monkeypatch):
    exp = make_experiment(random_pair)
    calls = []
    original = Evaluator._text_system

    def spy(self, model, rows, what):
        calls.append(what)
        return original(self, model, rows, what)

    monkeypatch.setattr(Evaluator, "_text_system", spy)
    first = evaluator(exp, tmp_path)
    first.evaluate(step=1)
    first.evaluate(step=2)
    assert sorted(calls) == ["relay", "source", "target"]
    evaluator(exp, tmp_path / "again").evaluate(step=1)  # a new run with the same settings: from disk
    assert sorted(calls) == ["relay", "source", "target"]
    evaluator(exp, tmp_path / "more", n=5).evaluate(step=1)  # other items: generated anew
    assert len(calls) == 6


def test_evaluating_the_same_weights_twice_is_byte_identical(random_pair, tmp_path):
    exp = make_experiment(random_pair)
    evaluator(exp, tmp_path / "a", use_cache=False).evaluate(step=5)
    evaluator(exp, tmp_path / "b", use_cache=False).evaluate(step=5)
    a = (tmp_path / "a" / "eval_samples_step_5.jsonl").read_bytes()
    b = (tmp_path / "b" / "eval_samples_step_5.jsonl").read_bytes()
    assert a == b


@pytest.mark.parametrize("mode", ["soft_only", "soft_plus_text", "adapter"])
def test_nothing_the_bridged_system_reads_contains_the_answer(random_pair, tmp_path, mode, monkeypatch):
    """Spy on everything the bridged system reads at evaluation: the source's token rows (the only input
    of the soft tokens) and every segment the target's input is assembled from. None may hold the gold
    solution or its final answer."""
    import latentbridge.bridge.core as bridge_module

    exp = make_experiment(random_pair, f"injection={mode}", "task.shots=2")
    bridge = exp.bridge
    seen_source: list[list[int]] = []
    seen_target: list[list[int]] = []
    original_rows, original_assemble = bridge.source_rows, bridge_module.assemble

    def rows_spy(prompts):
        rows = original_rows(prompts)
        seen_source.extend(rows)
        return rows

    def assemble_spy(rows, soft, embed, pad_id):
        for row in rows:
            seen_target.append([i for seg in row if hasattr(seg, "ids") for i in seg.ids])
            assert not any(getattr(seg, "supervised", False) for seg in row)  # no answer segment at all
        return original_assemble(rows, soft, embed, pad_id)

    bridge.source_rows = rows_spy
    monkeypatch.setattr(bridge_module, "assemble", assemble_spy)
    ev = evaluator(exp, tmp_path, systems=["bridged"])
    ev.generate_bridged()
    assert len(seen_source) == len(seen_target) == len(ev.items)
    src_tok, tgt_tok = bridge.source.tokenizer, bridge.target.tokenizer
    for example, source_row, target_row in zip(ev.items, seen_source, seen_target, strict=True):
        read_by_source = src_tok.decode(source_row, skip_special_tokens=True)
        read_by_target = tgt_tok.decode(target_row, skip_special_tokens=True)
        gold_final = example.answer.splitlines()[-1]  # "#### N"
        solution_lines = [line for line in example.answer.splitlines()[:-1] if line.strip()]
        for read in (read_by_source, read_by_target):
            assert gold_final not in read
            assert example.answer not in read
            for line in solution_lines:
                assert line not in read, f"solution line leaked: {line!r}"
        assert example.question in read_by_source  # the source does read the question
        assert (example.question in read_by_target) == (mode != "soft_only")


def test_wilson_interval_known_values():
    low, high = wilson_interval(77, 100)
    assert math.isclose(low, 0.6784, abs_tol=1e-4) and math.isclose(high, 0.8416, abs_tol=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert math.isclose(wilson_interval(10, 10)[1], 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_known_values():
    # 1 vs 6 discordant pairs: two-sided exact p = 2 * (1 + 7) / 2**7 = 0.125
    a = [True] * 1 + [False] * 6 + [True] * 5
    b = [False] * 1 + [True] * 6 + [True] * 5
    test = mcnemar_exact(a, b)
    assert (test["a_only"], test["b_only"]) == (1, 6)
    assert math.isclose(test["p_value"], 0.125)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_sign_flip_known_values():
    assert sign_flip_exact([]) == 1.0 and sign_flip_exact([0, 0]) == 1.0
    assert sign_flip_exact([1, 2]) == 0.5  # sums 3, 1, -1, -3: two of four reach |3|
    assert sign_flip_exact([2, 2, 2]) == 0.25  # three items, 2 of 3 seeds more each: 2 of 8 patterns
    assert sign_flip_exact([3, -3]) == 1.0


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60))
def test_sign_flip_with_one_seed_is_exact_mcnemar(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    mcnemar = mcnemar_exact(a, b)["p_value"]
    assert math.isclose(sign_flip_exact([int(x) - int(y) for x, y in pairs]), mcnemar, rel_tol=1e-12)


@given(st.lists(st.integers(-3, 3), max_size=40))
def test_sign_flip_is_a_probability_symmetric_in_sign(differences):
    p = sign_flip_exact(differences)
    assert 0 < p <= 1
    assert p == sign_flip_exact([-d for d in differences])


def test_answer_spread_and_collapse():
    assert answer_spread(["10"] * 19 + ["3"])["collapsed"] is True
    assert answer_spread([str(i) for i in range(20)])["collapsed"] is False
    assert answer_spread(["10"] * 5)["collapsed"] is False  # too few valid answers to call it
    spread = answer_spread(["1", "1", None, "2"])
    assert spread["distinct"] == 2 and spread["top_answer"] == "1" and math.isclose(spread["top_share"], 2 / 3)


def test_echo_detection():
    q = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning."
    assert echoes_question("Q: Janet's ducks lay 16 eggs per day. She eats", q)
    assert not echoes_question("Janet sells 9 eggs and makes 18 dollars.\n#### 18", q)
    assert echoes_question("how many? 3 + 4", "how many? 3 + 4")


def test_item_seeds_are_stable():
    from latentbridge.eval.harness import item_seed

    assert item_seed("arith-test-00001") == item_seed("arith-test-00001")
    assert item_seed("arith-test-00001") != item_seed("arith-test-00002")
    assert 0 <= item_seed("x") < 2**63
    torch.tensor([item_seed("x")], dtype=torch.long)
