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

    With ``chat=True`` every prompt goes through the tokenizer's own chat template as one user turn
    (the few-shot header and the question are its content) followed by the assistant's opening and
    the cue: the prefix is everything before the user's content (BOS and the user header), so the soft
    tokens, placed after the prefix, sit inside the user turn.
    """

    def __init__(self, tokenizer: Any, chat: bool = False, name: str = "the model",
                 chat_kwargs: dict[str, Any] | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise LatentBridgeError(
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; latentbridge needs offsets"
            )
        self.tokenizer, self.name = tokenizer, name
        self.chat_kwargs = dict(chat_kwargs or {})  # the template's variables (task.chat_template_kwargs)
        self.chat = self._chat_pieces(name) if chat else None
        self.prefix = self.ids(self.chat[0]) if self.chat else self._special_prefix()
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self._target_text = lru_cache(maxsize=None)(self._encode_target)
        self._opening = lru_cache(maxsize=64)(self._opening)  # type: ignore[method-assign]  # per conversation
        self._flags = lru_cache(maxsize=None)(self._message_flags)  # read by the sharer's rows and the layout

    def _special_prefix(self) -> list[int]:
        probe = "Question: 1"
        plain = self.ids(probe)
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return list(full[:start])
        return []

    def _chat_pieces(self, name: str) -> tuple[str, str]:
        """The chat template's text before and after a user message (with the assistant's opening)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise LatentBridgeError(f"task.chat_template is on but the tokenizer of {name} has no chat template")
        marker = "latentbridgeMARKER"
        text = self._render(marker)
        before, found, after = text.partition(marker)
        if not found:
            raise LatentBridgeError(f"the chat template of {name} does not contain the user's message as written")
        return before, after

    def _render(self, content: str, turns: tuple[tuple[str, str], ...] = ()) -> str:
        import jinja2

        messages = [*({"role": role, "content": text} for role, text in turns), {"role": "user", "content": content}]
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **self.chat_kwargs)
        except jinja2.exceptions.TemplateError as error:  # e.g. a template without a system role
            if not turns:
                raise
            roles = [role for role, _ in turns]
            raise LatentBridgeError(f"the chat template of {self.name} refuses a conversation whose earlier turns are "
                                    f"{roles}: {error}") from None

    def _opening(self, turns: tuple[tuple[str, str], ...]) -> str:
        """The chat template's text before the last user message, after ``turns``."""
        if not turns:
            return self.chat[0] if self.chat else ""
        return self._render("latentbridgeMARKER", turns).partition("latentbridgeMARKER")[0]

    def _layout(self, prompt: Prompt) -> tuple[str, int, int, int]:
        """The text a model reads for ``prompt`` (no special prefix the tokenizer adds), where the
        prompt's own text starts in it, how far the question's offsets shift, and where the cue starts."""
        if self.chat is None:
            if prompt.turns:
                raise LatentBridgeError(f"a prompt with earlier chat turns, but {self.name} is read without a chat "
                                        "template (task.chat_template: false)")
            return prompt.text, 0, 0, len(prompt.header) + len(prompt.question)
        content = prompt.header + prompt.question
        rendered = self._render(content, prompt.turns)
        after = len(self._opening(prompt.turns))  # the message is the last user turn's, never an earlier turn's
        start, kept = rendered.find(content, after), content
        if start < 0:  # the template trims the message (Llama-3's and Gemma's do)
            kept = content.strip()
            start = rendered.find(kept, after)
            if start < 0:
                raise LatentBridgeError("the chat template changes the user's message beyond trimming it")
        lead = len(content) - len(content.lstrip()) if kept is not content else 0
        return rendered + prompt.cue, start, start - lead, start + len(kept)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, prompt: Prompt) -> str:
        """The text a model reads for ``prompt`` (with a chat template: the rendered turn and the cue;
        without one: the prompt's text, no special prefix)."""
        return self._layout(prompt)[0]

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """What a model reads for ``prompt`` on its own: special prefix + prompt text."""
        text = self._target_text(prompt)
        return list(text.prefix) + list(text.prompt)

    def text_ids(self, text: str) -> list[int]:
        """Special prefix + ``text`` (for free-form prompts)."""
        return self.prefix + self.ids(text)

    def continued_ids(self, prompt: Prompt, continuation: str) -> list[int]:
        """What a model reads for ``prompt`` followed by ``continuation`` (the text relay's reasoning)."""
        text, *_ = self._layout(prompt)
        return (self.prefix if self.chat is None else []) + self.ids(text + continuation)

    def message_flags(self, prompt: Prompt) -> list[bool]:
        """With a chat template, for each token of :meth:`prompt_ids`: True where it is the message's rather than
        the template's (each turn's content: the earlier turns' and the user's, header and question; and the cue
        after the template), as the C2C authors' ``align_chat_messages`` tells message sections from template
        sections (their ``_compute_content_spans``: each message's content). Each earlier turn's content is
        located where the template puts it (rendered with a marker in its place), verbatim or trimmed; one the
        template changes otherwise counts as template, as do the turns after it."""
        if self.chat is None:
            raise LatentBridgeError(f"message sections need a chat template ({self.name} is read without one)")
        return list(self._flags(prompt))

    def _message_flags(self, prompt: Prompt) -> tuple[bool, ...]:
        full, start, _, content_end = self._layout(prompt)
        cue_start = len(full) - len(prompt.cue)
        contents = [(start, content_end), *self._turn_contents(prompt, full)]
        spans = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return tuple(any(a < end and b > begin for begin, end in contents) or b > cue_start for a, b in spans)

    def _turn_contents(self, prompt: Prompt, full: str) -> list[tuple[int, int]]:
        """Where each earlier turn's content lies in ``full``: the conversation rendered with a marker for each
        content shows the template's text around each (a folded system message included, wherever the template
        puts it); each content sits at its marker's place, shifted by the contents before it."""
        if not prompt.turns:
            return []
        markers = [f"latentbridgeTURN{i}X" for i in range(len(prompt.turns))]
        marked = self._render("latentbridgeMARKER", tuple((r, m) for (r, _), m in zip(prompt.turns, markers, strict=True)))
        texts = {m: t for m, (_, t) in zip(markers, prompt.turns, strict=True)}
        texts["latentbridgeMARKER"] = prompt.header + prompt.question
        places = sorted((marked.find(m), m) for m in texts if marked.find(m) >= 0)
        out, shift = [], 0
        for at, marker in places:
            kept = next((k for k in (texts[marker], texts[marker].strip()) if full.startswith(k, at + shift)), None)
            if kept is None:  # the template changes it beyond trimming: the places after it are unknown
                break
            if marker != "latentbridgeMARKER" and kept:
                out.append((at + shift, at + shift + len(kept)))
            shift += len(kept) - len(marker)
        return out

    def offsets(self, prompt: Prompt) -> list[tuple[int, int]]:
        """Each token of :meth:`target_text`'s ``prompt``: its character span in ``prompt.text`` (a token
        of the chat template's own text, outside the message, gets ``(0, 0)``)."""
        full, start, shift, _ = self._layout(prompt)
        encoded = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        spans = list(encoded["offset_mapping"])
        if self.chat is None:
            return [(int(a), int(b)) for a, b in spans]
        n = len(self._target_text(prompt).prefix)
        size = len(prompt.header) + len(prompt.question)
        return [(a - shift, b - shift) if start <= a and b - shift <= size else (0, 0) for a, b in spans[n:]]

    def target_text(self, prompt: Prompt, with_answer: bool = True) -> TargetText:
        text = self._target_text(prompt)
        return text if with_answer else text.without_answer()

    def _encode_target(self, prompt: Prompt) -> TargetText:
        full_prompt, start, shift, cue_start = self._layout(prompt)
        encoded = self.tokenizer(full_prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
        if self.chat is None:
            prefix = list(self.prefix)
        else:  # the chat template's opening (BOS and the user header) is the prefix: the message goes after it
            n = next((i for i, (_, b) in enumerate(offsets) if b > start), len(ids))
            prefix, ids, offsets = ids[:n], ids[n:], offsets[n:]
        q_start, q_end = (x + shift for x in prompt.own_question_span())  # the question's own text only
        overlapping = [i for i, (a, b) in enumerate(offsets) if a < q_end and b > q_start]
        span = (overlapping[0], overlapping[-1] + 1) if overlapping else (0, len(ids))
        cue_tokens = [i for i, (_, b) in enumerate(offsets) if b > cue_start]  # what follows the question
        cue = ids[cue_tokens[0] :] if cue_tokens else self.ids(prompt.cue)
        full = self.tokenizer(full_prompt + prompt.answer, add_special_tokens=False, return_offsets_mapping=True)
        read = len(prefix) + len(ids) if self.chat is not None else len(ids)
        if list(full["input_ids"][:read]) == (prefix + ids if self.chat is not None else ids):
            answer = list(full["input_ids"][read:])
            answer_offsets = [(a - len(full_prompt), b - len(full_prompt)) for a, b in full["offset_mapping"][read:]]
        else:
            alone = self.tokenizer(prompt.answer, add_special_tokens=False, return_offsets_mapping=True)
            answer, answer_offsets = list(alone["input_ids"]), alone["offset_mapping"]
        marker = prompt.answer.rfind("####")
        format_start = len(answer)  # no format line: only the end-of-text token
        if marker >= 0:
            format_start = next((i for i, (_, b) in enumerate(answer_offsets) if b > marker), len(answer))
        return TargetText(
            prefix=tuple(prefix),
            prompt=tuple(ids),
            question_span=span,
            cue=tuple(cue),
            answer=tuple(answer + self.eos),
            format_start=format_start,
        )
