"""Multiple-choice tasks: JSONL layouts, prompts and continuations, letter extraction, log-likelihood
scoring of every system (acc, acc_norm, the gold choice's NLL) and a recipe end to end through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from latentbridge.plugins.tasks.multiple_choice import (
    FactsChoice,
    FactsChoiceConfig,
    MultipleChoiceFiles,
    MultipleChoiceFilesConfig,
)

from latentbridge.api.choices import LETTERS, choice_predictions, extract_letter
from latentbridge.api.segments import Text
from latentbridge.bridge.layout import assemble
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.choices import continuation_ids, supervised_logprobs
from latentbridge.eval.harness import EvalSettings, Evaluator
from latentbridge.eval.systems import SYSTEMS
from latentbridge.io.data import read_choice_items

from .helpers import make_experiment, run_through_cli

MMLU_ROWS = [
    {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "22"], "answer": 1, "subject": "math"},
    {"question": "Capital of France?", "choices": ["Paris", "Rome"], "answer": "A", "subject": "geo"},
]
ARC_ROWS = [
    {"id": "q1", "question": "Which is a mammal?", "choices": {"text": ["trout", "whale", "crow"], "label": ["A", "B", "C"]},
     "answerKey": "B"},
    {"id": "q2", "question": {"stem": "Water boils at?", "choices": [{"text": "50 C", "label": "1"},
                                                                      {"text": "100 C", "label": "2"}]}, "answerKey": "2"},
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_both_layouts_are_read_with_their_gold_index(tmp_path):
    mmlu = read_choice_items(write_jsonl(tmp_path / "m.jsonl", MMLU_ROWS), "test")
    assert [(e.question, e.choices, e.gold, e.label) for e in mmlu] == [
        ("2 + 2 = ?", ("3", "4", "5", "22"), 1, "math"), ("Capital of France?", ("Paris", "Rome"), 0, "geo")]
    assert [e.id for e in mmlu] == ["test-1", "test-2"]
    arc = read_choice_items(write_jsonl(tmp_path / "a.jsonl", ARC_ROWS), "test")
    assert [(e.id, e.question, e.choices, e.gold) for e in arc] == [
        ("q1", "Which is a mammal?", ("trout", "whale", "crow"), 1), ("q2", "Water boils at?", ("50 C", "100 C"), 1)]
    # auto reads each record by its keys: a file may mix them
    mixed = read_choice_items(write_jsonl(tmp_path / "x.jsonl", [MMLU_ROWS[0], ARC_ROWS[0]]), "test")
    assert [e.gold for e in mixed] == [1, 1]


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "q", "choices": ["a"], "answer": 0}, "1 choice"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "names no choice"),
    ({"question": "q", "choices": ["a", ""], "answer": 0}, "choice 1 must be a non-empty string"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "index or letter"),
    ({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"}, "none of the labels"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, "question"),
])
def test_a_bad_record_is_one_line_naming_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [MMLU_ROWS[0], row])
    with pytest.raises(LatentBridgeError, match=message) as info:
        read_choice_items(path, "test")
    assert str(info.value).startswith(f"{path}:2:")


def files_task(tmp_path, **options):
    write_jsonl(tmp_path / "train.jsonl", MMLU_ROWS * 3)
    write_jsonl(tmp_path / "test.jsonl", [dict(r, id=f"t{i}") for i, r in enumerate(ARC_ROWS)])
    task = MultipleChoiceFiles(MultipleChoiceFilesConfig(data_dir=str(tmp_path), **options))
    task.dev_size = 2
    return task


def test_letter_format_lists_the_choices_and_supervises_the_gold_letter(tmp_path):
    task = files_task(tmp_path)
    item = task.examples("test")[0]
    prompt = task.prompt(item)
    assert prompt.text == "Question: Which is a mammal?\nA. trout\nB. whale\nC. crow\nAnswer:"
    assert prompt.answer == " B" and task.continuations(item) == ["A", "B", "C"]
    start, end = prompt.own_question_span()
    assert prompt.text[start:end] == "Which is a mammal?\nA. trout\nB. whale\nC. crow"


def test_text_format_is_cloze_and_supervises_the_gold_text(tmp_path):
    task = files_task(tmp_path, choice_format="text")
    item = task.examples("test")[1]
    assert task.prompt(item).text == "Question: Water boils at?\nAnswer:"
    assert task.prompt(item).answer == " 100 C" and task.continuations(item) == ["50 C", "100 C"]
    assert task.gold_answer(item) == "B"


def test_dev_is_carved_from_train_without_a_dev_file(tmp_path):
    task = files_task(tmp_path)
    dev, train = task.examples("dev"), task.examples("train")
    assert len(dev) == 2 and len(train) == 4 and not {e.id for e in dev} & {e.id for e in train}


def test_letters_with_text_unlisted_are_refused():
    problems = MultipleChoiceFilesConfig(data_dir=".", choice_format="letter", list_choices=False).check()
    assert [field for field, _ in problems] == ["list_choices"]


@pytest.mark.parametrize(("text", "found"), [
    ("B", "B"), (" (C) because", "C"), ("D. whale", "D"), ("The answer is b.", "B"), ("I pick C", "C"),
    ("none of them", None), ("E", None), ("Because of A", "A"),
])
def test_letter_extraction(text, found):
    assert extract_letter(text, "ABCD") == found


@given(st.sampled_from("ABCD"), st.text(alphabet="abcdefghij ,.", max_size=30))
def test_a_leading_letter_is_always_found(letter, rest):
    assert extract_letter(f"{letter}. {rest}", "ABCD") == letter
    assert extract_letter(f"({letter}) {rest}", "ABCD") == letter


def test_unlisted_generation_names_the_choice_it_opens_with():
    task = FactsChoice(FactsChoiceConfig())
    item = task.examples("test")[0]
    gold = item.choices[item.gold]
    assert task.extract_answer(f" {gold}\n#### 7", "generate", item) == LETTERS[item.gold]
    assert task.is_correct(f"{gold.upper()}", item)  # case and spacing are ignored
    assert task.extract_answer("Someone else has 3 moons.", "generate", item) is None
    with pytest.raises(LatentBridgeError, match="log-likelihoods"):
        task.extract_answer(gold, "acc", item)


def test_acc_and_acc_norm_pick_as_lm_eval_does():
    # a long choice wins on the sum only if its per-character score is lower; ties go to the first
    assert choice_predictions([-4.0, -3.0], [8, 2]) == (1, 0)
    assert choice_predictions([-2.0, -2.0, -5.0], [1, 1, 1]) == (0, 0)
    assert choice_predictions([-6.0, -1.0], [3, 3]) == (1, 1)


def test_facts_mc_has_four_distinct_sentences_and_a_spread_gold_position():
    task = FactsChoice(FactsChoiceConfig())
    test = task.examples("test")
    assert len(test) == 200 and {e.id for e in test} == {e.id for e in FactsChoice(FactsChoiceConfig()).examples("test")}
    for e in test:
        assert len(set(e.choices)) == 4 and e.answer == e.choices[e.gold]
    positions = [e.gold for e in test]
    assert all(20 <= positions.count(i) <= 80 for i in range(4))


def test_supervised_logprobs_equals_a_plain_forward(random_pair):
    exp = make_experiment(random_pair)
    target = exp.bridge.target
    context, continuation = [1, 5, 9, 14, 3], [7, 2, 11]
    short = [1, 4]
    inputs = assemble([[Text(context), Text(continuation, supervised=True)], [Text(short), Text([8], supervised=True)]],
                      None, target.embed, target.pad_id)
    totals, greedy = supervised_logprobs(target.model, inputs)
    with torch.no_grad():
        logits = target.model(input_ids=torch.tensor([context + continuation])).logits.float()
    logp = torch.log_softmax(logits[0], -1)
    expected = sum(logp[len(context) - 1 + i, tok].item() for i, tok in enumerate(continuation))
    assert totals[0] == pytest.approx(expected, abs=1e-4)
    with torch.no_grad():
        short_logits = target.model(input_ids=torch.tensor([short + [8]])).logits.float()
    assert totals[1] == pytest.approx(torch.log_softmax(short_logits[0, -2], -1)[8].item(), abs=1e-4)
    picked = [int(logits[0, len(context) - 1 + i].argmax()) for i in range(len(continuation))]
    assert greedy[0] == (picked == continuation)


def mc_evaluator(exp, tmp_path, n=6):
    settings = EvalSettings(n=n, batch_size=4, max_new_tokens=8, stop=[], systems=list(SYSTEMS))
    return Evaluator(exp.bridge, exp.task, settings, tmp_path, use_cache=False)


def test_every_system_scores_every_choice_and_the_fields_follow_from_the_scores(random_pair, tmp_path):
    exp = make_experiment(random_pair, "task={name: facts_mc}")
    ev = mc_evaluator(exp, tmp_path)
    summary = ev.evaluate(step=1)
    records = [json.loads(x) for x in (tmp_path / "eval_samples_test_step_1.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record, item in zip(records, ev.items, strict=True):
        assert record["choices"] == list(item.choices) and record["gold_index"] == item.gold
        for system in SYSTEMS:
            scores = record[f"{system}_choice_logprobs"]
            assert len(scores) == 4 and all(s < 0 for s in scores)
            lengths = [len(c) for c in item.choices]
            by_sum, by_norm = choice_predictions(scores, lengths)
            assert record[f"{system}_correct"] == (by_sum == item.gold)
            assert record[f"{system}_correct_acc_norm"] == (by_norm == item.gold)
            assert record[f"{system}_extracted"] == LETTERS[by_sum]
            assert record[f"{system}_gold_nll"] == pytest.approx(-scores[item.gold])
            assert isinstance(record[f"{system}_full"], str)
    for system in SYSTEMS:
        s = summary["systems"][system]
        assert set(s["by_filter"]) == {"acc", "acc_norm", "generate"} and set(s["ci95_by_filter"]) == set(s["by_filter"])
        assert s["accuracy"] == sum(r[f"{system}_correct"] for r in records) / 6
        assert s["by_filter"]["acc_norm"] == sum(r[f"{system}_correct_acc_norm"] for r in records) / 6


def test_the_target_score_is_the_log_likelihood_of_the_choice_after_the_prompt(random_pair, tmp_path):
    exp = make_experiment(random_pair, "task={name: facts_mc}")
    ev = mc_evaluator(exp, tmp_path, n=2)
    scores = ev.scores()
    encoder, model = exp.bridge.target_encoder, exp.bridge.target.model
    for index in range(2):
        item, prompt = ev.items[index], ev.prompts[index]
        context = encoder.prompt_ids(prompt)
        for c, choice in enumerate(item.choices):
            # the choice tokenized with the prompt, as training tokenizes the answer
            cont = continuation_ids(encoder, prompt, choice)
            assert cont == encoder.ids(prompt.text + " " + choice)[len(encoder.ids(prompt.text)):]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([context + cont])).logits[0].float(), -1)
            expected = sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(cont))
            assert scores["target"][index][c] == pytest.approx(expected, abs=1e-4)


def test_the_bridged_scores_read_the_message_and_the_controls_read_another(random_pair, tmp_path):
    from latentbridge.eval.choices import bridged_rows, score_rows

    exp = make_experiment(random_pair, "task={name: facts_mc}", "eval.n=4")
    ev = mc_evaluator(exp, tmp_path, n=4)
    scores = ev.scores()
    bridge = exp.bridge
    # shuffled item i reads item shuffle[i]'s message beside its own prompt and choices
    for i, j in enumerate(ev.shuffle):
        message = bridge.message([ev.prompts[j]], ev.seeds[[j]], examples=[ev.items[j]])
        rows = bridged_rows(bridge, message, exp.task, [ev.prompts[i]], [ev.items[i]])
        with torch.no_grad():
            alone = score_rows(bridge.target.model, rows, [4])[0]
        assert alone == pytest.approx(scores["shuffled"][i], abs=1e-4)
    assert scores["shuffled"] != scores["bridged"] and scores["null"] != scores["bridged"]
    with torch.no_grad():
        for p in bridge.translator.parameters():
            p.zero_()
    zeroed = mc_evaluator(exp, tmp_path / "z", n=4).scores()
    flat = [[s for item in zeroed[system] for s in item] for system in ("bridged", "shuffled", "null")]
    assert flat[0] == pytest.approx(flat[1], abs=1e-4) == flat[2]  # a message of zeros carries nothing


def test_a_multiple_choice_recipe_runs_through_the_cli_with_acc_and_acc_norm(random_pair, tmp_path):
    result = run_through_cli(random_pair, tmp_path, "facts_mc", "eval.n=8", "eval.dev_n=8", env={"COLUMNS": "200"})
    assert "acc_norm [95% CI]" in result.output and "gold NLL" in result.output
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]["final"]
    for system in SYSTEMS:
        s = final["systems"][system]
        assert s["n"] == 8 and len(s["ci95"]) == 2 and len(s["ci95_by_filter"]["acc_norm"]) == 2
    # the trained objective read the gold choice: the answer NLL of the supervised continuation
    task = FactsChoice(FactsChoiceConfig())
    item = task.examples("train")[0]
    assert task.prompt(item).answer == " " + item.choices[item.gold]


def test_the_relay_is_scored_without_the_source_reported_and_reads_its_output(random_pair, tmp_path):
    exp = make_experiment(random_pair, "task={name: facts_mc}")
    settings = EvalSettings(n=3, batch_size=4, max_new_tokens=8, stop=[], systems=["bridged", "relay"])
    ev = Evaluator(exp.bridge, exp.task, settings, tmp_path, use_cache=False)
    scores = ev.scores()
    assert scores.get("source") is None and len(scores["relay"]) == 3
    full = mc_evaluator(exp, tmp_path / "all", n=3).scores()
    assert scores["relay"] == full["relay"]  # the relay read the source's outputs all the same
    assert full["relay"] != full["target"]  # and they changed what the target scores
