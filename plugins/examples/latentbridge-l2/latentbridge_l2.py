"""An example third-party latentbridge plugin: objective ``l2``, an L2 penalty on the soft tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option


@dataclass
class L2Config(ObjectiveConfig):
    norm: float | None = option(
        None, gt=0, help="if set, pull each soft token's L2 norm toward this value instead of toward 0"
    )


class L2(Objective):
    """Mean squared L2 norm of the soft tokens (or squared distance of each norm to `norm`)."""

    name = "l2"
    Config = L2Config

    def compute(self, step: StepContext) -> torch.Tensor:
        norms = step.soft.float().norm(dim=-1)  # b k
        if self.config.norm is None:
            return norms.pow(2).mean()
        return (norms - self.config.norm).pow(2).mean()


@hookimpl
def register_objectives(register):
    register(L2)
