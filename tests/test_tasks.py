from __future__ import annotations

import json

import pytest

from latentbridge.api.task import Example
from latentbridge.errors import ConfigError, LatentBridgeError
from latentbridge.eval import extract_answer
from latentbridge.io.data import read_examples
from latentbridge.registry.host import Registry

REGISTRY = Registry.load(autoload=False)


def make_task(name, **config):
    return REGISTRY.get("task", name).cls(REGISTRY.config_for("task", name, config))


def test_real_gsm8k_loads(gsm8k_full):
    task = make_task("gsm8k", data_dir=str(gsm8k_full))
    test = task.examples("test")
    assert len(test) == 1319 and len(task.examples("train")) + len(task.examples("dev")) == 7473
    assert len(task.examples("dev")) == 200  # carved from the train file
    assert test[0].question.startswith("Janet")
    assert all(extract_answer(e.answer) is not None for e in test)


def test_arith_is_gsm8k_format_and_disjoint():
    task = make_task("arith")
    train, test = task.examples("train"), task.examples("test")
    assert len(test) == 200
    assert not {e.question for e in train} & {e.question for e in test}
    assert all(e.answer.splitlines()[-1].startswith("#### ") for e in test)
    assert all(extract_answer(e.answer) is not None for e in train[:500])
    assert len(task.labels()) >= 5


@pytest.mark.parametrize("mode", ["fixed", "per_item"])
def test_exemplars_never_include_the_item(mode):
    task = make_task("arith", shots=3, exemplars=mode)
    train = task.examples("train")
    for example in train[:50] + task.examples("test")[:50]:
        shots = task.exemplars(example)
        assert len(shots) == 3
        assert example.id not in {s.id for s in shots}
        assert example.question not in {s.question for s in shots}
        prompt = task.prompt(example)
        assert prompt.header.count("Question:") == 3
        assert example.answer not in prompt.text
        assert prompt.text.endswith(f"Question: {example.question}\nAnswer:")
    # fixed: one header for all test items; per_item: depends on the item
    headers = {task.prompt(e).header for e in task.examples("test")[:20]}
    assert (len(headers) == 1) == (mode == "fixed")


def test_exemplar_choice_is_stable():
    a = make_task("arith", shots=2, exemplars="per_item")
    b = make_task("arith", shots=2, exemplars="per_item")
    e = a.examples("test")[7]
    assert a.prompt(e) == b.prompt(e)


def test_zero_shot_prompt():
    task = make_task("arith")
    e = task.examples("test")[0]
    p = task.prompt(e)
    assert p.header == "" and p.text == f"Question: {e.question}\nAnswer:"
    assert p.answer == " " + e.answer


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no examples (the file is empty)"),
        ('{"question": "q", "answer": "a"}\nnot json\n', ":2: not valid JSON"),
        ('{"question": "q"}\n', ":1: field 'answer' must be a non-empty string"),
        ("[1, 2]\n", ":1: expected a JSON object, got list"),
    ],
)
def test_bad_data_files(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(LatentBridgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_examples(path, "test")


def test_missing_data_file(tmp_path):
    with pytest.raises(LatentBridgeError, match="data file not found"):
        read_examples(tmp_path / "nope.jsonl", "test")


def test_labels_and_ids_from_records(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": "#### 1", "kind": "x"}) + "\n\n")
    (example,) = read_examples(path, "train", label_field="kind")
    assert example.id == "train-1" and example.label == "x"


def test_an_id_that_repeats_within_a_file_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    records = [{"id": i, "question": f"q{i}?", "answer": f"#### {i}"} for i in range(5)]
    records.insert(4, {"id": "2", "question": "another q?", "answer": "#### 9"})  # "2" is the id 2 of line 3
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(LatentBridgeError) as info:
        read_examples(path, "train")
    assert str(info.value) == f"{path}:5: id '2' repeats line 3"


def test_ids_may_repeat_between_files_and_null_ids_are_line_numbers(tmp_path):
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": i, "question": f"{name} q{i}?", "answer": "#### 1"}) + "\n" for i in range(3)))
    for name in ("train", "test"):
        assert [e.id for e in read_examples(tmp_path / f"{name}.jsonl", name)] == ["0", "1", "2"]
    (tmp_path / "nulls.jsonl").write_text("".join(json.dumps({"id": None, "question": "q?", "answer": "#### 1"}) + "\n"
                                                  for _ in range(2)))
    assert [e.id for e in read_examples(tmp_path / "nulls.jsonl", "test")] == ["test-1", "test-2"]


def test_final_line_supervision_keeps_only_the_answer_line():
    """``supervise: final_line``: the supervised answer is the '#### N' line, the prompt, exemplars and
    the gold answer are unchanged (a version that cut the first line, or the exemplars, fails here)."""
    whole, final = make_task("arith", shots=2), make_task("arith", shots=2, supervise="final_line")
    for e in whole.examples("test")[:30]:
        a, b = whole.prompt(e), final.prompt(e)
        assert b.answer == " " + e.answer.splitlines()[-1] and b.answer.startswith(" #### ")
        assert a.answer == " " + e.answer
        assert (b.header, b.question, b.cue) == (a.header, a.question, a.cue)
        assert "\n####" in b.header  # the exemplars keep their worked solutions
        assert final.gold_answer(e) == whole.gold_answer(e) == extract_answer(b.answer)
    two_lines = next(e for e in whole.examples("test") if e.answer.count("\n") >= 2)
    assert final.prompt(two_lines).answer.count("\n") == 0


def test_final_line_supervision_needs_a_final_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "4"}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "4"}) + "\n")
    task = make_task("gsm8k", data_dir=str(tmp_path), supervise="final_line")
    task.dev_size = 0
    with pytest.raises(LatentBridgeError, match="supervise=final_line needs answers with a '####' line"):
        task.prompt(task.examples("test")[0])
    with pytest.raises(ConfigError, match="supervise: must be 'solution' for a multiple-choice task"):
        make_task("facts_mc", supervise="final_line")


def test_final_line_supervision_takes_the_last_answer_line():
    """From the last '####' on: a solution that mentions '####' earlier keeps only its final line."""
    task = make_task("arith", supervise="final_line")
    e = Example(id="x", question="q", answer="He writes #### on the board.\n2 + 2 = 4\n#### 4")
    assert task.supervised_answer(e) == "#### 4"
