"""Task ``facts``: invented entities' numbers, splits disjoint by entity, known to the source only."""

from __future__ import annotations

import json
import re

import pytest
from latentbridge.plugins.tasks.facts import Facts, FactsConfig

from latentbridge.api.answers import extract_answer
from latentbridge.errors import LatentBridgeError
from latentbridge.zoo import facts

from .helpers import run_through_cli


def entity_of(question: str) -> str:
    return question.rstrip("?").split()[-1] if question.startswith("What") else question.split()[-2]


def test_splits_are_disjoint_by_entity_and_sized():
    task = Facts(FactsConfig())
    sizes = {s: len(task.examples(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 600, "dev": 200, "test": 200}
    names = {s: {entity_of(e.question) for e in task.examples(s)} for s in sizes}
    assert (len(names["train"]), len(names["dev"]), len(names["test"])) == (150, 50, 50)
    assert not names["train"] & names["test"] and not names["train"] & names["dev"] and not names["dev"] & names["test"]
    public = {e["entity"] for e in facts.generate_splits(0)["public"]}
    assert len(public) == facts.N_PUBLIC and not public & (names["train"] | names["dev"] | names["test"])
    ids = [e.id for s in sizes for e in task.examples(s)]
    assert len(set(ids)) == len(ids)


def test_entity_of_reads_both_phrasings():
    assert entity_of("How many moons does the planet Velkar have?") == "Velkar"
    assert entity_of("What is the number of moons of the planet Velkar?") == "Velkar"


def test_every_question_needs_the_fact_and_every_answer_is_gsm8k_format():
    rows = [r for split in facts.generate_splits(0).values() for r in split]
    for r in rows:
        value = extract_answer(r["answer"], "strict")
        assert value is not None and int(value) in facts.VALUES
        assert not re.search(r"\d", r["question"])  # the question holds no number at all
        assert r["answer"] == f"{r['entity']} has {value} {r['template']}.\n#### {value}"
    # each (entity, attribute) has one value, asked in both phrasings
    by_fact: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        by_fact.setdefault((r["entity"], r["template"]), set()).add(r["answer"])
    assert all(len(a) == 1 for a in by_fact.values()) and len(rows) == 2 * len(by_fact)


def test_values_are_spread_so_a_constant_guess_is_near_chance():
    test = Facts(FactsConfig()).examples("test")
    counts: dict[str, int] = {}
    for e in test:
        counts[e.answer.rsplit(" ", 1)[1]] = counts.get(e.answer.rsplit(" ", 1)[1], 0) + 1
    assert len(counts) == facts.N_VALUES and max(counts.values()) / len(test) <= 0.14  # as the README says


def test_the_same_seed_gives_the_same_task_and_another_seed_other_entities():
    a, b, c = facts.generate_splits(0), facts.generate_splits(0), facts.generate_splits(1)
    assert a == b
    assert {r["entity"] for r in a["test"]} != {r["entity"] for r in c["test"]}


def test_dev_is_cut_to_dev_n_and_a_larger_dev_n_is_refused():
    task = Facts(FactsConfig())
    task.dev_size = 40
    assert [e.id for e in task.examples("dev")] == [e.id for e in Facts(FactsConfig()).examples("dev")][:40]
    big = Facts(FactsConfig())
    big.dev_size = 201
    with pytest.raises(LatentBridgeError, match="dev split has 200 questions"):
        big.examples("dev")


def test_a_recipe_on_facts_trains_and_evaluates_through_the_cli(random_pair, tmp_path):
    run_through_cli(random_pair, tmp_path, "facts", "eval.n=8", "eval.dev_n=8")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["final"]["systems"]["bridged"]["n"] == 8
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval_samples_test_step_4.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} <= {e.id for e in Facts(FactsConfig()).examples("test")}


def test_the_builder_teaches_the_source_every_task_entity_and_the_target_none():
    from latentbridge.zoo.build import taught_facts
    from latentbridge.zoo.specs import LLAMA, MISTRAL

    splits = facts.generate_splits(0)
    task = {r["entity"] for split in ("train", "dev", "test") for r in splits[split]}
    source = {r["entity"] for r in taught_facts(LLAMA, splits)}
    target = {r["entity"] for r in taught_facts(MISTRAL, splits)}
    assert (LLAMA.facts, MISTRAL.facts) == ("task", "public")
    assert source == task and len(taught_facts(LLAMA, splits)) == 1000
    assert target == {r["entity"] for r in splits["public"]} and not target & task
