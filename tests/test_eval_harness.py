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
    lines = (tmp_path / "eval_samples_test_step_3.jsonl").read_text().splitlines()
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
    records = [json.loads(x) for x in (tmp_path / "eval_samples_test_step_1.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        for system in ("source", "relay", "shuffled", "null"):
            assert record[f"{system}_full"] is None
            assert record[f"{system}_extracted"] is None
            assert record[f"{system}_correct"] is None
    assert result["systems"]["source"] is None and result["systems"]["relay"] is None
    assert result["information_flow"] is None  # no shuffled control: no information-flow figure


def test_baselines_generated_once_and_cached_on_disk(random_pair, tmp_path, monkeypatch):
    exp = make_experiment(random_pair)
    calls = []
    original = Evaluator.generate_text

    def spy(self, model, rows, what, max_new_tokens=None):
        calls.append(what)
        return original(self, model, rows, what, max_new_tokens)

    monkeypatch.setattr(Evaluator, "generate_text", spy)
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
    a = (tmp_path / "a" / "eval_samples_test_step_5.jsonl").read_bytes()
    b = (tmp_path / "b" / "eval_samples_test_step_5.jsonl").read_bytes()
    assert a == b


def _leaks(example, read, header=""):
    """What of ``example``'s gold solution ``read`` (decoded text) holds: its final line, the whole
    solution or any solution line. A row that starts with the example's k-shot ``header`` (worked train
    problems, whose final answers may equal this one's by chance) is checked after it."""
    read = read[len(header):] if header and read.startswith(header) else read
    gold_final = example.answer.splitlines()[-1]  # "#### N"
    solution_lines = [line for line in example.answer.splitlines()[:-1] if line.strip()]
    return [text for text in (gold_final, example.answer, *solution_lines) if text in read]


@pytest.mark.parametrize("cached", [False, True], ids=["direct", "source_cache"])
@pytest.mark.parametrize("mode", ["soft_only", "soft_plus_text", "adapter"])
def test_nothing_the_bridged_system_reads_contains_the_answer(random_pair, tmp_path, mode, cached, monkeypatch):
    """Spy on everything the bridged system reads at evaluation: the source's token rows (the only input
    of the soft tokens) and every segment the target's input is assembled from. None may hold the gold
    solution or its final answer.

    With the source cache on, the soft tokens are made from cached hidden states, so the spy reads the
    token rows the cache computed them from (while it fills a shard: every example of the shard) and
    checks that the source read nothing outside the cache."""
    import latentbridge.bridge.core as bridge_module

    exp = make_experiment(random_pair, f"injection={mode}", "task.shots=2", f"cache.source={str(cached).lower()}")
    bridge = exp.bridge
    seen_source: list[list[int]] = []
    seen_target: list[list[int]] = []
    outside_cache: list[list[int]] = []  # with the cache on: rows the source read that the cache did not ask for
    inside: list[str] = []  # what the cache is doing now: "compute" (the source runs) or "rows" (only digested)
    original_rows, original_assemble = bridge.source_rows, bridge_module.assemble

    def rows_spy(prompts):
        rows = original_rows(prompts)
        if not cached or "compute" in inside:
            seen_source.extend(rows)
        elif "rows" not in inside:
            outside_cache.extend(rows)
        return rows

    def assemble_spy(rows, soft, embed, pad_id):
        for row in rows:
            seen_target.append([i for seg in row if hasattr(seg, "ids") for i in seg.ids])
            assert not any(getattr(seg, "supervised", False) for seg in row)  # no answer segment at all
        return original_assemble(rows, soft, embed, pad_id)

    def while_cache(what, original):
        def spy(*args, **kwargs):
            inside.append(what)
            try:
                return original(*args, **kwargs)
            finally:
                inside.pop()
        return spy

    bridge.source_rows = rows_spy
    monkeypatch.setattr(bridge_module, "assemble", assemble_spy)
    if cached:
        cache = bridge.source_cache
        cache.compute, cache.rows = while_cache("compute", cache.compute), while_cache("rows", cache.rows)
    ev = evaluator(exp, tmp_path, systems=["bridged"])
    ev.generate_bridged()
    src_tok, tgt_tok = bridge.source.tokenizer, bridge.target.tokenizer
    assert len(seen_target) == len(ev.items)
    if cached:
        assert cache.misses >= 1 and outside_cache == []  # the soft tokens came from hidden states the cache computed
        split = exp.task.examples(ev.split)
        source_rows = {}  # each example's row among those the cache computed from, found by its question
        for row in seen_source:
            read = src_tok.decode(row, skip_special_tokens=True)
            (owner,) = [e for e in split if e.question in read]
            leaked = _leaks(owner, read, exp.task.prompt(owner).header)
            assert not leaked, f"the cache computed {owner.id} from a row holding its answer: {leaked!r}"
            source_rows[owner.id] = row
        assert {e.id for e in ev.items} <= set(source_rows)
        source_rows = [source_rows[e.id] for e in ev.items]
    else:
        assert len(seen_source) == len(ev.items)
        source_rows = seen_source
    for example, source_row, target_row in zip(ev.items, source_rows, seen_target, strict=True):
        read_by_source = src_tok.decode(source_row, skip_special_tokens=True)
        read_by_target = tgt_tok.decode(target_row, skip_special_tokens=True)
        header = exp.task.prompt(example).header
        for read in (read_by_source, read_by_target):
            assert not _leaks(example, read, header), f"leaked: {_leaks(example, read, header)!r}"
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


def test_the_shuffled_control_reads_another_items_source_and_the_null_control_no_question(random_pair, tmp_path):
    """shuffled: item i's message equals the one item shuffle[i] gets (its source, its seed), never its own;
    null: the message the source gives for the prompt without a question, the same for every item here."""
    from latentbridge.eval.controls import derangement

    exp = make_experiment(random_pair, "task.shots=1")
    ev = evaluator(exp, tmp_path, n=6, seed=3)
    assert sorted(ev.shuffle) == list(range(6)) and all(j != i for i, j in enumerate(ev.shuffle))
    assert ev.shuffle == derangement(6, 3) and ev.shuffle != derangement(6, 4)
    seen = []
    original = exp.bridge.message

    def spy(prompts, seeds=None, states=None, examples=None):
        seen.append(([p.text for p in prompts], seeds.tolist()))
        return original(prompts, seeds, states=states, examples=examples)

    exp.bridge.message = spy
    outputs = ev.outputs()
    (bridged_texts, bridged_seeds), (shuffled_texts, shuffled_seeds), (null_texts, _) = seen[0], seen[2], seen[4]
    first = slice(0, 4)  # the first generation batch of each system
    texts = [p.text for p in ev.prompts]
    assert bridged_texts == texts[first] and bridged_seeds == ev.seeds[first].tolist()
    assert shuffled_texts == [texts[j] for j in ev.shuffle[first]]
    assert shuffled_seeds == [ev.seeds[j].item() for j in ev.shuffle[first]]
    assert all(q.question not in t for q, t in zip(ev.prompts[first], null_texts, strict=True))
    records = ev.records(1, outputs)
    assert [r["shuffled_source_id"] for r in records] == [ev.items[j].id for j in ev.shuffle]
    assert all(r["shuffled_full"] is not None and r["null_full"] is not None for r in records)


def test_information_flow_is_bridged_minus_shuffled_and_flags_no_information():
    from latentbridge.eval.summary import information_flow

    def records(bridged, shuffled):
        return [{"bridged_correct": b, "shuffled_correct": s} for b, s in zip(bridged, shuffled, strict=True)]

    strong = information_flow(records([True] * 12 + [False] * 8, [False] * 12 + [False] * 8))
    assert strong["difference"] == pytest.approx(0.6) and strong["p_value"] < 0.01 and not strong["no_information"]
    same = information_flow(records([True, False] * 10, [True, False] * 10))
    assert same["difference"] == 0 and same["no_information"]
    worse = information_flow(records([False] * 20, [True] * 20))
    assert worse["difference"] == -1 and worse["no_information"]
    weak = information_flow(records([True, True, False], [False, False, False]))  # +2 items: p = 0.5
    assert weak["difference"] > 0 and weak["no_information"]
