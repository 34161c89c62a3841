"""Task ``chat_sft``: conversations in OpenHermes' layout (or chat messages), system turns dropped, one
exchange per item, the response supervised and scored by exact match and token F1; a wrong field is named
with file and line, exit 2."""

from __future__ import annotations

import json

import pytest
from latentbridge.plugins.tasks.chat_sft import SAMPLE, ChatSFT, ChatSFTConfig
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.errors import LatentBridgeError
from latentbridge.io.data import read_chat_items


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_layouts_system_turns_and_longer_conversations(tmp_path):
    path = write(tmp_path / "train.jsonl", [
        {"id": "a", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Add 2 and 3."},
                                      {"from": "gpt", "value": " 2 plus 3 is 5. "}]},
        {"messages": [{"role": "user", "content": "Spell 'ember' backwards."},
                      {"role": "assistant", "content": "'ember' backwards is 'rebme'."}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "Again"}, {"from": "gpt", "value": "Hello again"}]},
    ])
    examples, longer = read_chat_items(path, "train")
    assert [(e.id, e.question, e.answer) for e in examples] == [
        ("a", "Add 2 and 3.", "2 plus 3 is 5."), ("train-2", "Spell 'ember' backwards.", "'ember' backwards is 'rebme'.")]
    assert longer == 1


@pytest.mark.parametrize(("row", "message"), [
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}, ":2: turn 1: 'from' must be"),
    ({"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "y"}]}, ":2: turn 0: field 'value'"),
    ({"text": "x"}, ":2: expected a list 'conversations'"),
    ({"conversations": [{"from": "gpt", "value": "y"}, {"from": "human", "value": "x"}]},
     ":2: expected a user turn then an assistant turn"),
])
def test_a_wrong_field_names_the_file_and_line(tmp_path, row, message):
    good = {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
    path = write(tmp_path / "train.jsonl", [good, row])
    with pytest.raises(LatentBridgeError, match=str(path).replace(".", r"\.") + message.replace("(", r"\(")):
        read_chat_items(path, "train")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: c2c_reference\ntask:\n  data_dir: {tmp_path}\n")
    result = CliRunner().invoke(app, ["run", str(recipe), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output and message.split(": ", 1)[1][:20] in result.output


def test_scores_and_the_shipped_sample():
    task = ChatSFT(ChatSFTConfig())
    test = task.examples("test")
    assert len(test) == 20 and (SAMPLE / "test.jsonl").is_file()
    e = test[0]
    assert task.is_correct(" " + e.answer + "\n", e) and not task.is_correct("something else", e)
    assert task.item_metric(e.answer, e, "f1") == 1.0
    half = " ".join(e.answer.split()[: max(1, len(e.answer.split()) // 2)])
    assert 0 < task.item_metric(half, e, "f1") < 1
    assert task.item_metric("zzz", e, "f1") == 0.0
    assert len({x.question for x in test}) > 10  # items that differ
