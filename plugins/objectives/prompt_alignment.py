"""Objective ``prompt_alignment``: soft tokens pulled toward the target's embeddings of *this* question.

Matching k soft tokens to a question of n tokens: the question's token embeddings are split into k
contiguous chunks of equal share (``resample_weights(k, n)``: soft token j covers the fraction
``[j/k, (j+1)/k)`` of the question, tokens weighted by overlap) and each chunk is averaged. Soft
token j is pulled toward chunk j by cosine distance (``1 - cos``, the default: soft tokens have a
fixed RMS, so direction is what can be matched) or by the squared error after scaling both to unit RMS.
Only the question's own tokens count, never a few-shot header shared by all questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option


@dataclass
class PromptAlignmentConfig(ObjectiveConfig):
    metric: Literal["cosine", "mse"] = option("cosine", help="'cosine': 1 - cos; 'mse': squared error at unit RMS")


def unit_rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()


class PromptAlignment(Objective):
    """Pulls soft token j toward the mean target embedding of the j-th of k chunks of this question."""

    name = "prompt_alignment"
    Config = PromptAlignmentConfig
    needs = frozenset({"question_chunks"})

    def compute(self, step: StepContext) -> torch.Tensor:
        soft = step.soft.float()
        target = step.get("question_chunks").to(soft.device)
        if self.config.metric == "cosine":
            return (1 - F.cosine_similarity(soft, target, dim=-1)).mean()
        return (unit_rms(soft) - unit_rms(target)).pow(2).mean()


@hookimpl
def register_objectives(register):
    register(PromptAlignment)
