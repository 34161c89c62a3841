"""Building one training step's :class:`~latentbridge.context.StepContext`: inputs, curriculum, providers.

Shared quantities are providers, computed on first use and cached for the step, so objectives that
need the same forward pass share it:

- ``logits``: the target on the bridged input, with gradient to the soft tokens, for the last
  ``window`` positions only (``b W V``: the answers and the position before them; the labels that go
  with them are ``StepContext.logit_labels``);
- ``teacher_inputs`` / ``teacher_logits``: the target reading the literal prompt and the same answer,
  no soft tokens, no gradient (the distillation teacher), same window;
- ``question_embeds``: per row, the target's input embeddings of *this* question's tokens (``n_i d``);
- ``question_chunks``: those resampled to the ``k`` soft positions (``b k d``, see
  :func:`latentbridge.layout.resample_weights`); ``question_pooled``: their mean (``b d``);
- ``answer_embeds``: per row, the embeddings of the answer tokens; ``teacher_embeds``: the answer's or
  the question's, as the recipe's ``teacher`` says.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .context import StepContext
from .experiment import Experiment
from .injection import InjectionMode
from .layout import IGNORE_INDEX, Text, assemble, resample_weights
from .task import Example


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


class StepBuilder:
    """Turns a micro-batch of examples into the step context the objectives read."""

    def __init__(self, experiment: Experiment, generator: torch.Generator):
        self.exp = experiment
        self.generator = generator
        recipe = experiment.recipe
        self.curriculum = recipe.curriculum
        self.text_mode: InjectionMode | None = None
        if self.curriculum is not None:
            name = self.curriculum.text_injection
            registry = experiment.registry
            self.text_mode = registry.get("injection", name).cls(registry.config_for("injection", name))

    def modes(self, step: int, b: int) -> list[InjectionMode] | None:
        """Per-row injection modes under the curriculum: each row reads the question text with
        probability ``text_fraction(step)`` (drawn from the run's seeded generator), else the recipe's."""
        if self.curriculum is None:
            return None
        share = self.curriculum.text_fraction(step)
        draws = torch.rand(b, generator=self.generator).tolist()
        return [self.text_mode if u < share else self.exp.bridge.injection for u in draws]

    def context(self, step: int, examples: Sequence[Example], part: slice | None = None) -> StepContext:
        """The context for ``examples[part]``. Every random draw is made for the whole (global) batch
        first, so each example gets the same draws however the batch is split over processes."""
        bridge = self.exp.bridge
        seeds = torch.randint(0, 2**62, (len(examples),), generator=self.generator)
        modes = self.modes(step, len(examples))
        if part is not None:
            examples, seeds = list(examples)[part], seeds[part]
            modes = modes[part] if modes is not None else None
        prompts = [self.exp.task.prompt(e) for e in examples]
        hidden = bridge.source_hidden(prompts, examples)
        soft = bridge.soft_tokens(prompts, seeds, hidden=hidden)
        inputs = bridge.bridged_inputs(soft, prompts, with_answer=True, modes=modes)
        return StepContext(
            step=step,
            soft=soft,
            inputs=inputs,
            texts=[bridge.target_encoder.target_text(p) for p in prompts],
            examples=examples,
            providers=PROVIDERS,
            prompts=prompts,
            bridge=bridge,
            translator=bridge.translator,
            teacher=self.exp.recipe.teacher,
            modes=modes,
            generator=self.generator,
            seeds=seeds,
            source_hidden=hidden,
        )
