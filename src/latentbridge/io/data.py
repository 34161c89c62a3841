"""Reading task data from JSONL with problems reported by line number: GSM8K's layout (``question``,
``answer``) and the common multiple-choice layouts (MMLU's and ARC's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from latentbridge.api.task import Example
from latentbridge.errors import LatentBridgeError

ChoiceLayout = Literal["auto", "mmlu", "arc"]


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; a missing file or a line that is not a JSON
    object is an error naming the file and line."""
    if not path.is_file():
        raise LatentBridgeError(f"data file not found: {path}")
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is named by its number
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LatentBridgeError(f"{path}:{line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                        f"{exc.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LatentBridgeError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LatentBridgeError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record


class _Ids:
    """Example ids: the record's ``id`` (as a string) when it has one, else ``<split>-<line number>``;
    an id that repeats an earlier line's (``7`` and ``"7"`` are one id) is an error."""

    def __init__(self, path: Path, split: str):
        self.path, self.split, self.first_line = path, split, {}

    def __call__(self, record: dict[str, Any], line_no: int) -> str:
        example_id = f"{self.split}-{line_no}" if record.get("id") is None else str(record["id"])
        if example_id in self.first_line:
            raise LatentBridgeError(f"{self.path}:{line_no}: id '{example_id}' repeats line {self.first_line[example_id]}")
        self.first_line[example_id] = line_no
        return example_id


def read_examples(path: str | Path, split: str, label_field: str | None = None) -> list[Example]:
    """Examples from a JSONL file, one object per line with string fields ``question`` and ``answer``.

    An example's id is the record's ``id`` (as a string) when it has one (not null), else
    ``<split>-<line number>`` (stable as long as the file is). Blank lines are skipped; a missing or
    empty file, a line that is not JSON, a record without the fields or an id that repeats an earlier
    line's (``7`` and ``"7"`` are one id) is an error naming the file and line.
    """
    path = Path(path)
    ids = _Ids(path, split)
    examples: list[Example] = []
    for line_no, record in _records(path):
        try:
            question, answer = (_text(record.get(key), f"field '{key}'") for key in ("question", "answer"))
        except ValueError as exc:
            raise LatentBridgeError(f"{path}:{line_no}: {exc}") from None
        examples.append(Example(id=ids(record, line_no), question=question, answer=answer,
                                label=_label(record, label_field)))
    if not examples:
        raise LatentBridgeError(f"{path}: no examples (the file is empty)")
    return examples


def read_choice_items(path: str | Path, split: str, layout: ChoiceLayout = "auto",
                      label_field: str | None = "subject") -> list[Example]:
    """Multiple-choice items from a JSONL file, in either common layout:

    - ``mmlu``: ``{"question": str, "choices": [str, ...], "answer": 2}`` (the gold index, or its letter ``"C"``);
    - ``arc``: ``{"question": str, "choices": {"text": [...], "label": ["A", ...]}, "answerKey": "C"}``, or
      ARC's original ``{"question": {"stem": str, "choices": [{"text", "label"}, ...]}, "answerKey": "C"}``.

    ``auto`` reads each record by the key it has (``answerKey``: ARC, else MMLU). The items' ``answer`` is
    left empty (the task writes the gold continuation). Ids as :func:`read_examples`; ``label_field``
    (MMLU's ``subject`` by default) gives each item its label when the record has it. A record with
    fewer than two choices, an empty choice or a gold answer that names no choice is an error naming the
    file and line.
    """
    path = Path(path)
    ids = _Ids(path, split)
    items: list[Example] = []
    for line_no, record in _records(path):
        kind = layout if layout != "auto" else ("arc" if "answerKey" in record else "mmlu")
        try:
            question, choices, gold = (_arc if kind == "arc" else _mmlu)(record)
        except ValueError as exc:
            raise LatentBridgeError(f"{path}:{line_no}: {exc} ({kind} layout)") from None
        if len(choices) < 2:
            raise LatentBridgeError(f"{path}:{line_no}: {len(choices)} choice(s); a multiple-choice item needs at least 2")
        items.append(Example(id=ids(record, line_no), question=question, answer="", label=_label(record, label_field),
                             choices=tuple(choices), gold=gold))
    if not items:
        raise LatentBridgeError(f"{path}: no examples (the file is empty)")
    return items


def _label(record: dict[str, Any], field: str | None) -> str | None:
    """The record's ``field`` as a string, or None when there is no such field (or it is null)."""
    label = record.get(field) if field else None
    return None if label is None else str(label)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _mmlu(record: dict[str, Any]) -> tuple[str, list[str], int]:
    question = _text(record.get("question"), "field 'question'")
    choices = record.get("choices")
    if not isinstance(choices, list):
        raise ValueError("field 'choices' must be a list of strings")
    choices = [_text(c, f"choice {i}") for i, c in enumerate(choices)]
    answer = record.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        gold = ord(answer.strip().upper()) - ord("A")
    elif isinstance(answer, int) and not isinstance(answer, bool):
        gold = answer
    else:
        raise ValueError(f"field 'answer' must be the gold choice's index or letter, got {answer!r}")
    if not 0 <= gold < len(choices):
        raise ValueError(f"answer {answer!r} names no choice (there are {len(choices)})")
    return question, choices, gold


def _arc(record: dict[str, Any]) -> tuple[str, list[str], int]:
    question, choices = record.get("question"), record.get("choices")
    if isinstance(question, dict):  # ARC's original layout: the choices inside the question
        question, choices = question.get("stem"), question.get("choices")
    question = _text(question, "the question")
    if isinstance(choices, dict):
        texts, labels = choices.get("text"), choices.get("label")
    elif isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
        texts, labels = [c.get("text") for c in choices], [c.get("label") for c in choices]
    else:
        raise ValueError("field 'choices' must be {'text': [...], 'label': [...]} or a list of {'text', 'label'}")
    if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels):
        raise ValueError("the choices' 'text' and 'label' must be lists of the same length")
    texts = [_text(t, f"choice {i}") for i, t in enumerate(texts)]
    labels = [str(label) for label in labels]
    key = record.get("answerKey")
    if str(key) not in labels:
        raise ValueError(f"answerKey {key!r} is none of the labels {labels}")
    return question, texts, labels.index(str(key))


ContextLayout = Literal["auto", "squad", "hotpotqa", "longbench"]


def _answers(value: Any, what: str) -> tuple[str, ...]:
    """Gold answers: a string, a list of strings, or SQuAD's ``{"text": [...], "answer_start": [...]}``."""
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, list) and value and all(isinstance(v, dict) and "text" in v for v in value):
        value = [v["text"] for v in value]  # SQuAD's original file: [{"text", "answer_start"}, ...]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what}: expected a non-empty answer string, a list of them or "
                         f"{{\"text\": [...]}}, got {json.dumps(value)[:60]}")
    return tuple(value)


def _hotpot_context(value: Any) -> str:
    """HotpotQA's paragraphs, ``[[title, [sentence, ...]], ...]`` or ``{"title": [...], "sentences": [[...]]}``,
    as one text: each paragraph its title, a colon and its sentences, paragraphs apart by a blank line."""
    if isinstance(value, dict) and isinstance(value.get("title"), list) and isinstance(value.get("sentences"), list):
        if len(value["title"]) != len(value["sentences"]):
            raise ValueError(f"field 'context': {len(value['title'])} titles but {len(value['sentences'])} lists of "
                             "sentences")
        value = list(zip(value["title"], value["sentences"], strict=True))
    if not isinstance(value, list) or not value:
        raise ValueError("field 'context': expected HotpotQA's paragraphs [[title, [sentences]], ...]")
    out = []
    for paragraph in value:
        if (not isinstance(paragraph, list | tuple) or len(paragraph) != 2 or not isinstance(paragraph[0], str)
                or not isinstance(paragraph[1], list) or not all(isinstance(s, str) for s in paragraph[1])):
            raise ValueError("field 'context': expected HotpotQA's paragraphs [[title, [sentences]], ...]")
        out.append(f"{paragraph[0]}: {''.join(paragraph[1]).strip()}")
    return "\n\n".join(out)


def context_layout(record: dict[str, Any]) -> str:
    """The layout of one record: ``longbench`` (``input``, ``context``, ``answers``), ``hotpotqa``
    (``context`` a list of paragraphs, ``answer``) or ``squad`` (``context``, ``question``, ``answers``)."""
    if "input" in record and "question" not in record:
        return "longbench"
    if isinstance(record.get("context"), list | dict):
        return "hotpotqa"
    return "squad"


def read_context_items(path: str | Path, split: str, layout: ContextLayout = "auto") -> list[Example]:
    """Context-split items from a JSONL file, in the layouts of

    - ``squad``: ``{"id", "context": str, "question": str, "answers": {"text": [...], "answer_start": [...]}}``
      (or ``"answers": [str, ...]``, or SQuAD's original ``[{"text", "answer_start"}, ...]``);
    - ``hotpotqa``: ``{"_id", "question", "answer": str, "context": [[title, [sentence, ...]], ...]}`` (or the
      HF dataset's ``{"title": [...], "sentences": [[...]]}``): the paragraphs joined, each after its title;
    - ``longbench``: ``{"_id", "input": question, "context": long text, "answers": [str, ...]}``.

    ``auto`` reads each line's own layout (:func:`context_layout`). Every gold answer is kept
    (:attr:`Example.answers`); the first is what training supervises. A missing or mistyped field is an
    error naming the file and line."""
    path = Path(path)
    ids = _Ids(path, split)
    examples: list[Example] = []
    for line_no, record in _records(path):
        kind = context_layout(record) if layout == "auto" else layout
        try:
            if kind == "hotpotqa":
                context = _hotpot_context(record.get("context"))
                answers = _answers(record.get("answer"), "field 'answer'")
            else:
                context = _text(record.get("context"), "field 'context'")
                answers = _answers(record.get("answers"), "field 'answers'")
            question = _text(record.get("input" if kind == "longbench" else "question"),
                             f"field '{'input' if kind == 'longbench' else 'question'}'")
        except ValueError as exc:
            raise LatentBridgeError(f"{path}:{line_no}: {exc} ({kind} layout)") from None
        if record.get("id") is None and record.get("_id") is not None:
            record = {**record, "id": record["_id"]}
        examples.append(Example(id=ids(record, line_no), question=question, answer=answers[0].strip(),
                                context=context, answers=answers, label=kind))
    if not examples:
        raise LatentBridgeError(f"{path}: no examples (the file is empty)")
    return examples


_CHAT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    """``(role, text)`` of a conversation in OpenHermes' layout (``conversations: [{from, value}]``) or the
    chat-messages one (``messages: [{role, content}]``); roles as ``user``, ``assistant``, ``system``."""
    if isinstance(record.get("conversations"), list):
        raw, role_key, text_key = record["conversations"], "from", "value"
    elif isinstance(record.get("messages"), list):
        raw, role_key, text_key = record["messages"], "role", "content"
    else:
        raise ValueError("expected a list 'conversations' ([{from, value}], OpenHermes) or 'messages' "
                         "([{role, content}])")
    turns = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict) or turn.get(role_key) not in _CHAT_ROLES:
            raise ValueError(f"turn {i}: '{role_key}' must be one of {', '.join(sorted(_CHAT_ROLES))}")
        turns.append((_CHAT_ROLES[turn[role_key]], _text(turn.get(text_key), f"turn {i}: field '{text_key}'")))
    return turns


def read_chat_items(path: str | Path, split: str) -> tuple[list[Example], int]:
    """Instruction/response pairs from a JSONL file of conversations (see :func:`_turns`), and how many
    conversations were left out for holding more than one exchange. System turns are dropped, as the C2C
    authors drop them; what is left must be one user turn then one assistant turn: the question and the
    answer (the response, what training supervises). A missing or mistyped field is an error naming the
    file and line."""
    path = Path(path)
    ids = _Ids(path, split)
    examples: list[Example] = []
    longer = 0
    for line_no, record in _records(path):
        try:
            turns = [t for t in _turns(record) if t[0] != "system"]
        except ValueError as exc:
            raise LatentBridgeError(f"{path}:{line_no}: {exc}") from None
        if len(turns) > 2:
            longer += 1
            continue
        if [role for role, _ in turns] != ["user", "assistant"]:
            raise LatentBridgeError(f"{path}:{line_no}: expected a user turn then an assistant turn, got "
                                    f"{[role for role, _ in turns]}")
        examples.append(Example(id=ids(record, line_no), question=turns[0][1], answer=turns[1][1].strip()))
    if not examples:
        raise LatentBridgeError(f"{path}: no single-exchange conversations"
                                + (f" ({longer} with more than one left out)" if longer else " (the file is empty)"))
    return examples, longer
