"""Weights of the loss terms: each objective's schedule, and the one place a weight is applied."""

from __future__ import annotations

from typing import Any

import torch

from latentbridge.api.objective import ObjectiveConfig
from latentbridge.registry.blame import blame
from latentbridge.runtime.distributed import world_size


def scheduled_weights(configs: dict[str, ObjectiveConfig], step: int) -> dict[str, float]:
    """Each objective's weight at ``step``: its own schedule, times the schedule of the objective it
    ``scale_with``s (if any). The runner multiplies each term by this, once; nothing else weights a term."""
    own = {name: config.weight_at(step) for name, config in configs.items()}
    return {
        name: own[name] * (own[config.scale_with] if config.scale_with is not None else 1.0)
        for name, config in configs.items()
    }


def weighted_loss(
    objectives: torch.nn.ModuleDict, ctx: Any, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float], float]:
    """The loss to back-propagate, each term's unweighted value, and the weighted total to log.

    This is the one place a weight is applied to a term. The total is ``sum(weight * term)`` over the
    terms that are on: the value of the objective, the same on any number of processes. The loss to
    back-propagate also multiplies a term over the gathered batch (``Objective.global_batch``) by the
    number of processes: its gradient reaches only this process's rows, and gradients are averaged."""
    loss = ctx.inputs.inputs_embeds.new_zeros((), dtype=torch.float32)
    values: dict[str, float] = {}
    for name, objective in objectives.items():
        if weights[name] == 0.0:
            continue
        with blame("objective", name, objective):
            term = objective(ctx)
        loss = loss + weights[name] * (world_size() if objective.global_batch else 1) * term
        values[name] = term.item()
    total = sum(weights[n] * v for n, v in values.items())
    return loss, values, total
