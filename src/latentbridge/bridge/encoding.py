"""Turning prompts into token ids for one model, identically in training and evaluation."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from latentbridge.api.injection import TargetText
from latentbridge.api.task import Prompt
from latentbridge.errors import LatentBridgeError


class PromptEncoder:
    """Encodes :class:`~latentbridge.api.task.Prompt` objects with one tokenizer (results are cached).

    The answer is tokenized *in context*: the ids of ``prompt + answer`` after the prompt's own ids,
    so the supervised tokens are the ones the model would produce after the prompt. (Should the
    tokenizer merge across the boundary, the answer is tokenized on its own instead.) The end-of-text
    token closes every answer, so the model learns to stop.
    """

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "is_fast", False):
            raise LatentBridgeError(
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; latentbridge needs offsets"
            )
        self.tokenizer = tokenizer
        self.prefix = self._special_prefix()
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self._target_text = lru_cache(maxsize=None)(self._encode_target)

    def _special_prefix(self) -> list[int]:
        probe = "Question: 1"
        plain = self.ids(probe)
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return list(full[:start])
        return []

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """What a model reads for ``prompt`` on its own: special prefix + prompt text."""
        return self.prefix + list(self._target_text(prompt).prompt)

    def text_ids(self, text: str) -> list[int]:
        """Special prefix + ``text`` (for free-form prompts such as the text relay)."""
        return self.prefix + self.ids(text)

    def target_text(self, prompt: Prompt, with_answer: bool = True) -> TargetText:
        text = self._target_text(prompt)
        return text if with_answer else text.without_answer()

    def _encode_target(self, prompt: Prompt) -> TargetText:
        full_prompt = prompt.text
        encoded = self.tokenizer(full_prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
        q_start, q_end = prompt.own_question_span()  # the question's own text, not the template's words
        overlapping = [i for i, (a, b) in enumerate(offsets) if a < q_end and b > q_start]
        span = (overlapping[0], overlapping[-1] + 1) if overlapping else (0, len(ids))
        cue_start = len(prompt.header) + len(prompt.question)  # the cue follows the templated question
        cue_tokens = [i for i, (_, b) in enumerate(offsets) if b > cue_start]
        cue = ids[cue_tokens[0] :] if cue_tokens else self.ids(prompt.cue)
        full = self.tokenizer(full_prompt + prompt.answer, add_special_tokens=False, return_offsets_mapping=True)
        if list(full["input_ids"][: len(ids)]) == ids:
            answer = list(full["input_ids"][len(ids) :])
            answer_offsets = [(a - len(full_prompt), b - len(full_prompt)) for a, b in full["offset_mapping"][len(ids) :]]
        else:
            alone = self.tokenizer(prompt.answer, add_special_tokens=False, return_offsets_mapping=True)
            answer, answer_offsets = list(alone["input_ids"]), alone["offset_mapping"]
        marker = prompt.answer.rfind("####")
        format_start = len(answer)  # no format line: only the end-of-text token
        if marker >= 0:
            format_start = next((i for i, (_, b) in enumerate(answer_offsets) if b > marker), len(answer))
        return TargetText(
            prefix=tuple(self.prefix),
            prompt=tuple(ids),
            question_span=span,
            cue=tuple(cue),
            answer=tuple(answer + self.eos),
            format_start=format_start,
        )
