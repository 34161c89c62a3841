"""The InjectionMode interface: where the soft tokens go in what the target reads."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from latentbridge.api.messages import layout_of
from latentbridge.api.segments import Segment, Text


@dataclass(frozen=True)
class TargetText:
    """One example's target-side text, as target-tokenizer ids.

    ``prefix``: special tokens that open every sequence (BOS, or nothing). ``prompt``: the literal
    prompt (few-shot exemplars, this question, the answer cue). ``question_span``: ``[start, end)`` of
    this question's own tokens inside ``prompt``. ``cue``: the short instruction that asks for the
    answer (the end of the prompt, tokenized on its own), all that ``soft_only`` shows besides the
    soft tokens. ``answer``: the supervised continuation (training), empty for generation.
    ``format_start``: index in ``answer`` where its final ``#### <number>`` line (and end-of-text) begins.
    ``answer_context``: tokens read before the answer but not supervised (empty but for objectives that
    train on the target's own free-running continuation).
    """

    prefix: Sequence[int]
    prompt: Sequence[int]
    question_span: tuple[int, int]
    cue: Sequence[int]
    answer: Sequence[int] = ()
    format_start: int = 0
    answer_context: Sequence[int] = ()

    def without_answer(self) -> TargetText:
        return TargetText(self.prefix, self.prompt, self.question_span, self.cue, (), 0)

    def with_answer(self, answer: Sequence[int], context: Sequence[int] = ()) -> TargetText:
        """This text with another supervised ``answer``, read after the unsupervised ``context``."""
        return dataclasses.replace(self, answer=tuple(answer), answer_context=tuple(context), format_start=0)

    def question_ids(self) -> Sequence[int]:
        start, end = self.question_span
        return self.prompt[start:end]


@dataclass
class InjectionConfig:
    """Fields every injection mode has (none yet); subclasses add their own."""

    def check(self) -> list[tuple[str, str]]:
        return []


class InjectionMode:
    """Turns soft tokens plus target text into ``inputs_embeds``, mask, positions and labels.

    Subclasses set ``name`` and ``Config`` and implement :meth:`segments`, which says for one example
    which pieces the target reads, in order; :func:`latentbridge.bridge.layout.assemble` does the rest
    (left padding as ``[pad][bos][soft][text]``, positions from the mask, labels ``-100`` except answers).
    ``reads_question`` says whether the literal question text is part of the input (False for
    ``soft_only``: the only mode that really tests communication). ``accepts`` names the layout families
    (``Message.layout``: ``soft_slot``, ``cache_prefix``, ``fused_prompt``, ``cache_before``,
    ``patched_prompt``) or message kinds it places: a ``Soft()`` segment holds soft tokens (``soft_slot``)
    or a cache's place (``cache_prefix``); a mode without one can take a ``fused_prompt`` message.
    :meth:`takes` says whether it places a kind.
    """

    name: ClassVar[str]
    Config: ClassVar[type[InjectionConfig]] = InjectionConfig
    reads_question: ClassVar[bool] = True
    accepts: ClassVar[tuple[str, ...]] = ("soft_slot",)
    # its rows open with ``Text(cached=True)``: the target's input holds only what follows that lead
    caches_lead: ClassVar[bool] = False

    def __init__(self, config: InjectionConfig):
        self.config = config

    @classmethod
    def takes(cls, kind: str) -> bool:
        """Whether it places messages of ``kind``: named, or of a layout family it accepts."""
        return kind in cls.accepts or layout_of(kind) in cls.accepts

    @abstractmethod
    def segments(self, text: TargetText) -> list[Segment]:
        """The pieces of one row, e.g. ``[Soft(), Text(prefix), Text(prompt), Text(answer, supervised=True)]``."""


def answer_segment(text: TargetText) -> list[Segment]:
    """The supervised answer (after any unsupervised ``answer_context``), or nothing at generation time."""
    context = [Text(text.answer_context)] if text.answer_context else []
    return [*context, Text(text.answer, supervised=True)] if text.answer else context
