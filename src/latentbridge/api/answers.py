"""GSM8K answer extraction and scoring, as lm-evaluation-harness does it.

Two named filters: ``strict`` takes the number after the first ``#### ``; ``flexible`` takes the last
number anywhere in the text. Both normalise by removing commas, ``$`` and one trailing period before
an exact string match. No match is ``None`` (written as ``[invalid]`` in reports).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

INVALID = "[invalid]"

_STRICT = re.compile(r"#### (\-?[0-9\.\,\$]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")

Mode = Literal["strict", "flexible"]


def normalize_number(text: str) -> str:
    """Remove commas and ``$``, then one trailing period: ``"$1,200." -> "1200"``."""
    text = text.strip().replace(",", "").replace("$", "")
    return text[:-1] if text.endswith(".") else text


def extract_answer(text: str, mode: Mode = "strict") -> str | None:
    """The normalised answer in ``text``, or None when the filter finds none.

    >>> extract_answer("She makes 9 * 2 = $18.\\n#### 18")
    '18'
    >>> extract_answer("so the answer is $1,200.", mode="flexible")
    '1200'
    """
    if mode == "strict":
        match = _STRICT.search(text)
        candidates = [match.group(1)] if match else []
    elif mode == "flexible":  # the last match that holds a digit ("..", ",," do not count)
        candidates = [a or b for a, b in reversed(_FLEXIBLE.findall(text))]
    else:
        raise ValueError(f"unknown extraction mode {mode!r}: use 'strict' or 'flexible'")
    for found in candidates:
        value = normalize_number(found)
        if any(ch.isdigit() for ch in value):
            return value
    return None


def is_correct(generated_text: str, gold_answer_text: str, mode: Mode = "strict") -> bool:
    """True when the answer extracted from ``generated_text`` equals the gold ``#### N``."""
    gold = extract_answer(gold_answer_text, "strict")
    if gold is None:
        raise ValueError(f"gold answer has no '#### <number>' line: {gold_answer_text[-60:]!r}")
    return extract_answer(generated_text, mode) == gold


# -- SQuAD's answer normalisation, exact match and F1 (as the official script, HF evaluate's `squad` and
# lm-evaluation-harness compute them) --

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def squad_normalize(text: str) -> str:
    """Lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, golds: Sequence[str]) -> bool:
    """Whether the normalised prediction equals any normalised gold answer."""
    mine = squad_normalize(prediction)
    return any(mine == squad_normalize(g) for g in golds)


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token-overlap F1 of the normalised prediction against any gold answer."""
    best = 0.0
    mine = squad_normalize(prediction).split()
    for gold in golds:
        theirs = squad_normalize(gold).split()
        same = sum((Counter(mine) & Counter(theirs)).values())
        if same:
            precision, recall = same / len(mine), same / len(theirs)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best  # no token in common (an empty prediction included) scores 0, as in SQuAD v1.1's script


class SquadScored:
    """A free-text task scored as SQuAD scores it: exact match (the primary filter ``exact_match``) and token
    F1 (the item metric ``f1``) of the normalised answer against every gold answer. A task mixes it in before
    its base (``class T(SquadScored, Task)``) and may say which part of a generation is the answer
    (:meth:`answer_text`, default: all of it) and which answers are gold (:meth:`golds`, default: the item's
    ``answers``, else its ``answer``)."""

    filters: tuple[str, ...] = ("exact_match",)
    metrics: tuple[str, ...] = ("f1",)

    def answer_text(self, generated: str) -> str:
        return generated.strip()

    def golds(self, example: Any) -> tuple[str, ...]:
        return tuple(example.answers) or (example.answer,)

    def extract_answer(self, generated: str, filter: str) -> str | None:
        return squad_normalize(self.answer_text(generated)) or None

    def gold_answer(self, example: Any) -> str | None:
        return squad_normalize(self.golds(example)[0])

    def is_correct(self, generated: str, example: Any, filter: str | None = None) -> bool:
        return squad_exact(self.answer_text(generated), self.golds(example))

    def item_metric(self, generated: str, example: Any, metric: str) -> float:
        if metric != "f1":
            return super().item_metric(generated, example, metric)  # type: ignore[misc]
        return squad_f1(self.answer_text(generated), self.golds(example))
