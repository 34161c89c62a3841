"""Objective ``nll``: cross-entropy of the target on the supervised answer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.api.segments import IGNORE_INDEX


@dataclass
class NLLConfig(ObjectiveConfig):
    reduction: Literal["token", "example"] = option(
        "token", help="'token': mean over all answer tokens; 'example': mean per answer, then over the batch"
    )


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token") -> torch.Tensor:
    """Next-token cross-entropy where ``labels != -100``; ``logits: b L V``, ``labels: b L``."""
    logits, targets = logits[:, :-1].float(), labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    if not supervised.any():
        raise ValueError("nll: the batch has no supervised answer tokens")
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view_as(targets)
    if reduction == "token":
        return per_token.sum() / supervised.sum()
    counts = supervised.sum(1)
    per_example = per_token.sum(1) / counts.clamp(min=1)
    return per_example[counts > 0].mean()


class NLL(Objective):
    """Cross-entropy on the answer tokens of the bridged input (answer supervision)."""

    name = "nll"
    Config = NLLConfig
    needs = frozenset({"logits"})
    messages = None  # reads the target's logits only: trains any message kind

    def compute(self, step: StepContext) -> torch.Tensor:
        return answer_nll(step.logits, step.logit_labels, self.config.reduction)


@hookimpl
def register_objectives(register):
    register(NLL)
