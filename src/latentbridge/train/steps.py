"""Building one training step's :class:`~latentbridge.api.context.StepContext`: inputs, curriculum, shared quantities."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentbridge.api.context import StepContext
from latentbridge.api.injection import InjectionMode
from latentbridge.api.messages import SoftTokens
from latentbridge.api.task import Example
from latentbridge.bridge.build import Experiment


class StepBuilder:
    """Turns a micro-batch of examples into the step context the objectives read."""

    def __init__(self, experiment: Experiment, generator: torch.Generator):
        self.exp = experiment
        self.generator = generator
        self.quantities = {q.name: q.compute for q in experiment.registry.quantities()}
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
        states = bridge.source_states(prompts, examples)
        message = bridge.message(prompts, seeds, states=states)
        inputs = bridge.bridged_inputs(message, prompts, with_answer=True, modes=modes)
        return StepContext(
            step=step,
            soft=message.tokens if isinstance(message, SoftTokens) else None,
            inputs=inputs,
            message=message,
            texts=[bridge.target_encoder.target_text(p) for p in prompts],
            examples=list(examples),
            prompts=prompts,
            source_hidden=(states.hidden, states.mask),
            seeds=seeds,
            modes=modes,
            teacher=self.exp.recipe.teacher,
            target=bridge.target,
            source=bridge.source,
            translator=bridge.translator,
            relayout=lambda other, with_answer=True, answers=None: bridge.bridged_inputs(
                other, prompts, with_answer=with_answer, modes=modes, answers=answers),
            generator=self.generator,
            bridge=bridge,
            quantities=self.quantities,
        )
