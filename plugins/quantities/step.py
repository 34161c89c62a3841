"""The built-in shared quantities of a training step, registered through the hook a plugin uses.

Each is computed on first use and cached for the step (see :class:`~latentbridge.api.context.StepContext`),
so objectives that need the same forward pass share it. ``latentbridge list-plugins --kind quantity``
lists them with the help texts below; a plugin adds its own through ``register_step_quantities``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentbridge.api.context import StepContext, StepQuantity
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.segments import IGNORE_INDEX, Text
from latentbridge.bridge.layout import assemble
from latentbridge.nn.resample import resample_weights


def _embed_rows(ctx: StepContext, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [ctx.target.embed(torch.as_tensor(list(r), dtype=torch.long)).float() for r in rows]


def _window(ctx: StepContext) -> int:
    # answers end at the right edge under left padding: the longest answer plus the position before it
    return int((ctx.inputs.labels != IGNORE_INDEX).sum(1).max()) + 1


def _logits(ctx: StepContext) -> torch.Tensor:
    # logits_to_keep: the vocabulary projection runs on the answer window only, not on the prompt
    logits = ctx.inputs.forward(ctx.target.model, logits_to_keep=ctx.get("window")).logits
    return logits.to(ctx.inputs.labels.device)  # a model spread over devices returns them on its last


def _teacher_inputs(ctx: StepContext):
    rows = [[Text(t.prefix), Text(t.prompt), Text(t.answer, supervised=True)] for t in ctx.texts]
    return assemble(rows, None, ctx.target.embed, ctx.target.pad_id)


def _teacher_logits(ctx: StepContext) -> torch.Tensor:
    with torch.no_grad():
        inputs = ctx.get("teacher_inputs").model_kwargs()
        return ctx.target.model(**inputs, logits_to_keep=ctx.get("window")).logits.to(ctx.inputs.labels.device)


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


BUILTIN_QUANTITIES = (
    StepQuantity("window", _window,
                 "int W: how many positions at the right edge the logits cover (the longest answer + 1)"),
    StepQuantity("logits", _logits,
                 "b W V: the target's logits on the bridged input, last W positions, with gradient to the soft tokens "
                 "(labels: step.logit_labels)"),
    StepQuantity("teacher_inputs", _teacher_inputs,
                 "TargetInputs: the target reading the literal prompt and the same answer, no soft tokens"),
    StepQuantity("teacher_logits", _teacher_logits,
                 "b W V: the target's logits on teacher_inputs, last W positions, no gradient (the distillation teacher)"),
    StepQuantity("question_embeds", _question_embeds,
                 "list of n_i d: per row, the target's input embeddings of this question's own tokens, no gradient"),
    StepQuantity("question_chunks", _question_chunks,
                 "b k d: question_embeds resampled to the k soft positions (k equal chunks, averaged)"),
    StepQuantity("question_pooled", _question_pooled, "b d: the mean of question_embeds per row"),
    StepQuantity("answer_embeds", _answer_embeds,
                 "list of m_i d: per row, the target's input embeddings of the answer tokens, no gradient"),
    StepQuantity("teacher_embeds", _teacher_embeds,
                 "list of n_i d: answer_embeds or question_embeds, as the recipe's `teacher` says"),
)


@hookimpl
def register_step_quantities(register):
    for quantity in BUILTIN_QUANTITIES:
        register(quantity)
