"""qa_context: SQuAD's, HotpotQA's and LongBench's layouts from local JSONL, SQuAD's normalisation, exact
match and F1, and a wrong field reported with its file and line."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from latentbridge.api.answers import squad_exact, squad_f1, squad_normalize
from latentbridge.cli import app
from latentbridge.io.data import read_context_items

from .helpers import recipe_dict

DATA = Path(__file__).parent / "data" / "qa_context"
cli = CliRunner()


# -- SQuAD's normalisation and scores (the official v1.1 script's, HF evaluate's `squad`, lm-eval's) -------


@pytest.mark.parametrize(("text", "normal"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("an apple, a pear", "apple pear"),
    ("  Theatre   of the  Absurd ", "theatre of absurd"),  # "the" inside a word stays
    ("A.D. 1066", "ad 1066"),
    ("Thea", "thea"),
    ("\"Anne\"-Marie", "annemarie"),
])
def test_normalisation(text, normal):
    assert squad_normalize(text) == normal


def test_exact_match_and_f1_against_every_gold():
    assert squad_exact("the river Sella.", ["Sella", "the river Sella"])
    assert not squad_exact("river Sella banks", ["Sella"])
    assert squad_f1("Ada Kerrow", ["Ada Kerrow"]) == 1.0
    assert squad_f1("Kerrow", ["Ada Kerrow"]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert squad_f1("the founder Ada", ["Ada Kerrow", "founder Ada"]) == 1.0  # the best gold
    assert squad_f1("", ["Ada"]) == 0.0 and squad_f1("Ada Ada", ["Ada"]) == pytest.approx(2 * 0.5 / 1.5)


WORDS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=6)


@given(words=st.lists(WORDS, min_size=1, max_size=5), noise=st.lists(st.sampled_from(
    ["a", "an", "the", "The", ",", ".", "!", "?", "'", "  "]), max_size=4))
def test_articles_punctuation_and_spaces_never_change_the_score(words, noise):
    """Adding articles, punctuation, case and spacing to a gold answer leaves exact match and F1 at 1."""
    words = [w for w in words if w.lower() not in ("a", "an", "the")] or ["x"]
    gold = " ".join(words)
    noisy = " ".join(noise) + " " + gold.upper() + "".join(n for n in noise if n in string.punctuation)
    assert squad_exact(noisy, [gold]) and squad_f1(noisy, [gold]) == 1.0


# -- the three layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["squad", "hotpotqa", "longbench"])
def test_each_layout_reads_context_question_and_every_answer(layout):
    items = read_context_items(DATA / layout / "test.jsonl", "test")
    rows = [json.loads(line) for line in (DATA / layout / "test.jsonl").read_text().splitlines()]
    assert len(items) == len(rows) == 12 and {i.label for i in items} == {layout}
    for item, row in zip(items, rows, strict=True):
        assert item.id == str(row.get("id", row.get("_id")))
        assert item.question == row.get("question", row.get("input"))
        assert item.context and item.answers and item.answer == item.answers[0]
        if layout == "hotpotqa":  # every paragraph, after its title
            paragraphs = row["context"] if isinstance(row["context"], list) else list(
                zip(row["context"]["title"], row["context"]["sentences"], strict=True))
            for title, sentences in paragraphs:
                assert f"{title}: {''.join(sentences).strip()}" in item.context
            assert item.answers == (row["answer"],)
        else:
            assert item.context == row["context"]
            answers = row["answers"]["text"] if isinstance(row["answers"], dict) else row["answers"]
            assert item.answers == tuple(answers)
    assert read_context_items(DATA / layout / "test.jsonl", "test", layout) == items  # named = auto


@pytest.mark.parametrize(("line", "message"), [
    ({"id": 1, "context": "c", "question": "q"}, "field 'answers': expected a non-empty answer string"),
    ({"id": 1, "context": "c", "question": 7, "answers": ["a"]}, "field 'question' must be a non-empty string"),
    ({"id": 1, "context": [["t", "not a list"]], "question": "q", "answer": "a"}, "HotpotQA's paragraphs"),
    ({"_id": 1, "input": "q", "context": "", "answers": ["a"]}, "field 'context' must be a non-empty string"),
    ({"id": 1, "context": "c", "question": "q", "answers": {"text": []}}, "field 'answers'"),
], ids=["no-answers", "question-not-text", "hotpot-paragraph", "longbench-empty-context", "squad-no-text"])
def test_a_wrong_field_names_file_and_line_and_exits_2(random_pair, tmp_path, monkeypatch, line, message):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "squad" / "train.jsonl", data / "train.jsonl")
    good = (DATA / "squad" / "test.jsonl").read_text().splitlines()[:2]
    (data / "test.jsonl").write_text("\n".join([*good, json.dumps(line)]) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, "task={name: qa_context}", f"task.data_dir={data}",
                                                 "eval.dev_n=4")))
    result = cli.invoke(app, ["run", str(recipe), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{data / 'test.jsonl'}:3: " in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_records_exact_match_and_f1_for_every_system(random_pair, tmp_path, monkeypatch):
    """Through the CLI on the HotpotQA slice: the target reads the question only, every record has each
    system's F1 beside its exact match, and the summary their means."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(
        random_pair, "task={name: qa_context}", f"task.data_dir={DATA / 'hotpotqa'}", "eval.dev_n=4",
        "eval.n=4", "train.steps=2", "eval.every=2", "eval.max_new_tokens=4",
        "eval.systems=[source, target, bridged, skyline]")))
    result = cli.invoke(app, ["run", str(recipe), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "run" / "eval_samples_test_step_2.jsonl").read_text().splitlines()]
    assert len(records) == 4 and len({r["question"] for r in records}) == 4
    for r in records:
        assert r["primary_filter"] == "exact_match" and r["metrics"] == ["f1"]
        for system in ("source", "target", "bridged", "skyline"):
            text = r[f"{system}_full"]
            first = next((x.strip() for x in text.splitlines() if x.strip()), "")
            assert r[f"{system}_f1"] == squad_f1(first, [r["gold_full_text"]])
            assert r[f"{system}_correct"] == squad_exact(first, [r["gold_full_text"]])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]["final"]["systems"]
    for system in ("source", "target", "bridged", "skyline"):
        mean = sum(r[f"{system}_f1"] for r in records) / 4
        assert summary[system]["metrics"] == {"f1": pytest.approx(mean)}


def test_every_gold_answer_counts(tmp_path):
    """SQuAD keeps several gold answers: any one is right (exact match, F1, gold_match), not the first only."""
    from latentbridge.api.task import Example
    from latentbridge.eval.summary import system_summary
    from latentbridge.registry.host import get_registry

    registry = get_registry()
    task = registry.get("task", "qa_context").cls(registry.config_for("task", "qa_context", {"data_dir": str(tmp_path)}))
    example = Example(id="1", question="Who won?", answer="Denver Broncos", context="...",
                      answers=("Denver Broncos", "Broncos", "the Broncos"))
    assert task.is_correct("Broncos\nmore", example) and task.item_metric("Broncos", example, "f1") == 1.0
    assert not task.is_correct("Denver", example) and task.item_metric("Denver", example, "f1") == pytest.approx(2 / 3)
    record = {"question": "Who won?", "gold_extracted": task.gold_answer(example), "primary_filter": "exact_match",
              "gold_answers": list(example.answers),
              "gold_answers_extracted": [task.extract_answer(a, "exact_match") for a in example.answers],
              "target_full": "Broncos", "target_extracted": "broncos", "target_correct": True}
    assert system_summary([record], "target")["gold_match"] == 1


def test_squad_s_original_answer_list_and_a_hotpot_dict_that_does_not_add_up(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"id": "a", "context": "c", "question": "q",
                                "answers": [{"text": "x", "answer_start": 0}, {"text": "y", "answer_start": 2}]}) + "\n")
    assert read_context_items(path, "test")[0].answers == ("x", "y")
    path.write_text(json.dumps({"_id": "b", "question": "q", "answer": "a",
                                "context": {"title": ["t1", "t2"], "sentences": [["s"]]}}) + "\n")
    with pytest.raises(Exception, match=r"test.jsonl:1: field 'context': 2 titles but 1 lists of sentences"):
        read_context_items(path, "test")
