"""Multiple-choice tasks: items with choices and a gold index, scored by log-likelihood and by generation.

A :class:`MultipleChoiceTask` writes each item's prompt (the question, with its lettered choices listed
under it when ``list_choices``) and the continuation of each choice: its letter (``choice_format:
letter``, MMLU's style) or its own text (``text``, ARC's cloze style). The evaluation harness scores
every system by the log-likelihood of each choice's continuation after what the system reads, as
lm-evaluation-harness defines its metrics:

- ``acc``: the choice with the highest summed log-probability is the gold one;
- ``acc_norm``: the same after dividing each choice's log-probability by its length in characters;

and by generation: the greedy output names a choice (``generate``: its letter, or the choice's text
when the choices are not listed), C2C's zero-shot style. Training supervises the gold choice's
continuation (its NLL), like any task's answer. Ties go to the first choice, as with ``numpy.argmax``.
"""

from __future__ import annotations

import dataclasses
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from latentbridge.api.options import option
from latentbridge.api.task import Example, Split, Task, TaskConfig
from latentbridge.errors import LatentBridgeError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SCORE_FILTERS = ("acc", "acc_norm")  # computed from the choices' log-likelihoods, not from generated text
GENERATE = "generate"


@dataclass
class MultipleChoiceConfig(TaskConfig):
    choice_format: Literal["letter", "text"] = option(
        "letter", help="what is scored after the cue: each choice's letter ('letter': the prompt lists the "
        "choices as 'A. ...', MMLU's style) or each choice's own text ('text': ARC's cloze style)")
    list_choices: bool | None = option(
        None, help="list the lettered choices under the question (default: only with choice_format 'letter')")

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.choice_format == "letter" and self.list_choices is False:
            problems.append(("list_choices", "must not be false with choice_format 'letter' (the letters name "
                             "the listed choices)"))
        if self.supervise != "solution":
            problems.append(("supervise", "must be 'solution' for a multiple-choice task (training supervises "
                             "the gold choice's continuation)"))
        return problems

    @property
    def listed(self) -> bool:
        return self.choice_format == "letter" if self.list_choices is None else self.list_choices


class MultipleChoiceTask(Task):
    """A task whose items have ``choices`` and a ``gold`` index. Subclasses implement :meth:`load_items`
    (items with their choices and gold index; ``answer`` may be empty: it is written here)."""

    Config: ClassVar[type[TaskConfig]] = MultipleChoiceConfig
    config: MultipleChoiceConfig
    filters: ClassVar[tuple[str, ...]] = (*SCORE_FILTERS, GENERATE)

    @abstractmethod
    def load_items(self, split: Split) -> list[Example]:
        """Every item of ``split``, in a fixed order, ids unique, each with ``choices`` and ``gold``."""

    def load(self, split: Split) -> list[Example]:
        items = self.load_items(split)
        for item in items:
            if item.gold is None or not 0 <= item.gold < len(item.choices) or len(item.choices) > len(LETTERS):
                raise LatentBridgeError(f"task '{self.name}': item '{item.id}' needs 2 to {len(LETTERS)} choices "
                                        "and a gold index among them")
        return [dataclasses.replace(item, answer=self.continuation(item, item.gold)) for item in items]

    def continuation(self, example: Example, index: int) -> str:
        """What follows the cue (after ``answer_separator``) for choice ``index``: its letter or its text."""
        return LETTERS[index] if self.config.choice_format == "letter" else example.choices[index]

    def continuations(self, example: Example) -> list[str]:
        return [self.continuation(example, i) for i in range(len(example.choices))]

    def question_text(self, example: Example) -> str:
        if not self.config.listed:
            return example.question
        return example.question + "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(example.choices))

    # -- scoring ---------------------------------------------------------------------------------------

    def gold_answer(self, example: Example) -> str | None:
        return None if example.gold is None else LETTERS[example.gold]

    def extract_answer(self, generated: str, filter: str, example: Example | None = None) -> str | None:
        """The letter of the choice ``generated`` names (filter ``generate``), or None. With listed choices:
        the letter the output opens with (``B``, ``(B)``, ``B.``), else the one after "answer is", else the
        first standalone letter of a choice; unlisted: the choice whose text the output opens with (the
        longest, ignoring case and spacing). ``acc`` and ``acc_norm`` come from scores, not from text."""
        if filter in SCORE_FILTERS:
            raise LatentBridgeError(f"filter '{filter}' is computed from the choices' log-likelihoods, not from text")
        if filter != GENERATE:
            raise LatentBridgeError(f"task '{self.name}' has no answer filter '{filter}'")
        if example is None:
            raise LatentBridgeError("a multiple-choice answer is extracted against its item's choices")
        n = len(example.choices)
        if self.config.listed:
            return extract_letter(generated, LETTERS[:n])
        return _opening_choice(generated, self.continuations(example))

    def is_correct(self, generated: str, example: Example, filter: str | None = None) -> bool:
        found = self.extract_answer(generated, filter or GENERATE, example)
        return found is not None and found == self.gold_answer(example)


def extract_letter(text: str, letters: str) -> str | None:
    """The choice letter ``text`` gives: the one it opens with, else the one after "answer is", else its
    first standalone letter among ``letters``; None when it names none.

    >>> extract_letter(" (C) because ...", "ABCD"), extract_letter("The answer is B.", "ABCD")
    ('C', 'B')
    """
    valid = re.escape(letters)
    for pattern in (rf"^\s*\(?([{valid}])(?:[\s.):,]|$)", rf"answer is:?\s*\(?([{valid}])\b", rf"\b([{valid}])\b"):
        found = re.search(pattern, text, flags=re.IGNORECASE if pattern.startswith("answer") else 0)
        if found:
            return found.group(1).upper()
    return None


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _opening_choice(text: str, continuations: Sequence[str]) -> str | None:
    said = _squash(text)
    best = None
    for i, choice in enumerate(continuations):
        wanted = _squash(choice)
        if wanted and said.startswith(wanted) and (best is None or len(wanted) > len(_squash(continuations[best]))):
            best = i
    return None if best is None else LETTERS[best]


def choice_predictions(logprobs: Sequence[float], lengths: Sequence[int]) -> tuple[int, int]:
    """The choice ``acc`` picks (highest log-probability) and the one ``acc_norm`` picks (highest
    log-probability per character); ties go to the first, as ``numpy.argmax`` does."""
    if len(logprobs) != len(lengths) or not logprobs:
        raise ValueError("one log-probability and one length per choice")
    by_sum = max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
    normed = [lp / max(1, n) for lp, n in zip(logprobs, lengths, strict=True)]
    by_norm = max(range(len(normed)), key=lambda i: (normed[i], -i))
    return by_sum, by_norm
