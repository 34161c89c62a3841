"""The Objective interface: one named, unweighted loss term per training step."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from latentbridge.api.context import BuildContext, StepContext
from latentbridge.api.options import option
from latentbridge.errors import ShapeError


@dataclass
class ObjectiveConfig:
    """Fields every objective has: its weight and when it switches on."""

    weight: float = option(1.0, ge=0, help="weight in the total loss, applied once, by the runner")
    start_step: int = option(0, ge=0, help="the term is off (weight 0) before this step")
    warmup_steps: int = option(0, ge=0, help="steps after start_step over which the weight ramps from 0")
    scale_with: str | None = option(
        None, help="name of another objective in the recipe: this term's weight is multiplied by its weight"
    )

    def check(self) -> list[tuple[str, str]]:
        return []

    def weight_at(self, step: int) -> float:
        """The scheduled weight at training step ``step`` (the first is 1): 0 before ``start_step``, then
        ``weight / warmup_steps`` at the first step it is on, growing linearly to ``weight``."""
        if step < self.start_step:
            return 0.0
        if self.warmup_steps == 0:
            return self.weight
        first = max(self.start_step, 1)
        return self.weight * min(1.0, (step - first + 1) / self.warmup_steps)


class Objective(nn.Module):
    """A loss term. Subclasses set ``name`` and ``Config`` and implement :meth:`compute`.

    :meth:`compute` returns the *unweighted* scalar loss; the runner multiplies it by
    ``config.weight_at(step)`` (the only place a weight is applied) and logs it under ``name``.
    An objective may own trainable parameters (a probe head): they are trained and saved with the
    translator. ``needs`` names the shared step quantities it reads (see :class:`StepContext`).
    """

    name: ClassVar[str]
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    needs: ClassVar[frozenset[str]] = frozenset()
    # the message kinds it can train (latentbridge.api.messages); None: any, it reads the target's logits only
    messages: ClassVar[tuple[str, ...] | None] = ("soft_tokens",)
    # True for a loss over the batch gathered from every process (a contrastive loss): its gradient
    # reaches only this process's rows, so the runner scales it by the number of processes
    global_batch: ClassVar[bool] = False
    # False for a loss that needs every position of a row in the target's input (it selects rows of the
    # inputs, or reads attention over the whole row): a mode that reads a row's lead as a cache
    # (``InjectionMode.caches_lead``, soft_after_header) leaves only the rest in the input
    after_cached_lead: ClassVar[bool] = True

    def __init__(self, config: ObjectiveConfig, ctx: BuildContext):
        super().__init__()
        self.config = config
        self.build_context = ctx

    @classmethod
    def check_models(cls, source: Any, target: Any, config: ObjectiveConfig) -> list[str]:
        """Problems this objective has with the models, read from their config.json before any weight
        loads (``source``/``target``: ``ModelFacts`` with model_type, hidden_size, num_layers, num_heads,
        num_kv_heads, head_dim, vocab_size, rotary, sliding_window). Each string becomes a recipe problem."""
        return []

    def forward(self, step: StepContext) -> torch.Tensor:
        previous, step.allowed = step.allowed, frozenset(self.needs)  # only what it declared
        try:
            loss = self.compute(step)
        finally:
            step.allowed = previous
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ShapeError(f"objective '{self.name}' must return a scalar tensor, got {shape}")
        return loss

    @abstractmethod
    def compute(self, step: StepContext) -> torch.Tensor:
        """The unweighted loss for this step, a 0-dim tensor."""
