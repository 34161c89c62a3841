"""Building one training step's :class:`~latentbridge.api.context.StepContext`: inputs, curriculum, providers.

Shared quantities are providers, computed on first use and cached for the step, so objectives that
need the same forward pass share it:

- ``logits``: the target on the bridged input, with gradient to the soft tokens, for the last
  ``window`` positions only (``b W V``: the answers and the position before them; the labels that go
  with them are ``StepContext.logit_labels``);
- ``teacher_inputs`` / ``teacher_logits``: the target reading the literal prompt and the same answer,
  no soft tokens, no gradient (the distillation teacher), same window;
- ``question_embeds``: per row, the target's input embeddings of *this* question's tokens (``n_i d``);
- ``question_chunks``: those resampled to the ``k`` soft positions (``b k d``, see
  :func:`latentbridge.nn.resample.resample_weights`); ``question_pooled``: their mean (``b d``);
- ``answer_embeds``: per row, the embeddings of the answer tokens; ``teacher_embeds``: the answer's or
  the question's, as the recipe's ``teacher`` says.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentbridge.api.context import StepContext
from latentbridge.api.segments import IGNORE_INDEX, Text
from latentbridge.bridge.layout import assemble
from latentbridge.nn.resample import resample_weights


def _embed_rows(ctx: StepContext, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    target = ctx.bridge.target
    with torch.no_grad():
        return [target.embed(torch.as_tensor(list(r), dtype=torch.long)).float() for r in rows]


def _window(ctx: StepContext) -> int:
    """How many positions at the right edge hold the answers, plus the one before: the only positions
    whose logits any loss reads (answers end at the right edge under left padding)."""
    return int((ctx.inputs.labels != IGNORE_INDEX).sum(1).max()) + 1


def _logits(ctx: StepContext) -> torch.Tensor:
    # logits_to_keep: the vocabulary projection runs on the answer window only, not on the prompt
    return ctx.bridge.target.model(**ctx.inputs.model_kwargs(), logits_to_keep=ctx.get("window")).logits


def _teacher_inputs(ctx: StepContext):
    target = ctx.bridge.target
    rows = [[Text(t.prefix), Text(t.prompt), Text(t.answer, supervised=True)] for t in ctx.texts]
    return assemble(rows, None, target.embed, target.pad_id)


def _teacher_logits(ctx: StepContext) -> torch.Tensor:
    with torch.no_grad():
        inputs = ctx.get("teacher_inputs").model_kwargs()
        return ctx.bridge.target.model(**inputs, logits_to_keep=ctx.get("window")).logits


def _question_embeds(ctx: StepContext) -> list[torch.Tensor]:
    return _embed_rows(ctx, [t.question_ids() for t in ctx.texts])


def _question_chunks(ctx: StepContext) -> torch.Tensor:
    k = ctx.soft.shape[1]
    chunks = [resample_weights(k, e.shape[0]).to(e.device) @ e for e in ctx.get("question_embeds")]
    return torch.stack(chunks)


def _question_pooled(ctx: StepContext) -> torch.Tensor:
    return torch.stack([e.mean(0) for e in ctx.get("question_embeds")])


def _answer_embeds(ctx: StepContext) -> list[torch.Tensor]:
    return _embed_rows(ctx, [t.answer for t in ctx.texts])


def _teacher_embeds(ctx: StepContext) -> list[torch.Tensor]:
    return ctx.get("answer_embeds" if ctx.teacher == "answer" else "question_embeds")


PROVIDERS = {
    "window": _window,
    "logits": _logits,
    "teacher_inputs": _teacher_inputs,
    "teacher_logits": _teacher_logits,
    "question_embeds": _question_embeds,
    "question_chunks": _question_chunks,
    "question_pooled": _question_pooled,
    "answer_embeds": _answer_embeds,
    "teacher_embeds": _teacher_embeds,
}
