"""Objective ``contrastive_prompt``: InfoNCE between pooled soft tokens and pooled question embeddings.

Each example's mean soft token must be closer (cosine) to the mean target embedding of *its own*
question than to the other questions in the batch (gathered across processes when distributed).
Symmetric cross-entropy over the ``b x b`` similarity matrix divided by the temperature. Soft tokens
that are the same for every question cannot tell the questions apart: the question-to-soft direction
is then exactly chance, ``log(b)``, and the soft-to-question direction at least that (Jensen), while
soft tokens that match their own question drive both toward 0. Constant outputs are punished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentbridge import (
    BuildContext,
    LatentBridgeError,
    Objective,
    ObjectiveConfig,
    StepContext,
    hookimpl,
    option,
)
from latentbridge.runtime.distributed import gather_with_grad


@dataclass
class ContrastivePromptConfig(ObjectiveConfig):
    temperature: float = option(0.07, gt=0, help="softmax temperature (initial value when learnable)")
    learnable_temperature: bool = option(False, help="learn the temperature (trained and saved with the translator)")


class ContrastivePrompt(Objective):
    """InfoNCE: pooled soft tokens vs pooled embeddings of the matching question; the batch gives negatives."""

    name = "contrastive_prompt"
    Config = ContrastivePromptConfig
    needs = frozenset({"question_pooled"})
    global_batch = True  # negatives come from every process

    def __init__(self, config: ContrastivePromptConfig, ctx: BuildContext):
        super().__init__(config, ctx)
        log_tau = torch.tensor(math.log(config.temperature))
        if config.learnable_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)
        if ctx.batch_size < 2:
            raise LatentBridgeError("objectives.contrastive_prompt needs train.batch_size >= 2 (the batch gives the negatives)")

    def compute(self, step: StepContext) -> torch.Tensor:
        soft = F.normalize(gather_with_grad(step.soft.float().mean(1)), dim=-1)
        questions = F.normalize(gather_with_grad(step.get("question_pooled").to(soft.device)), dim=-1)
        logits = soft @ questions.T / self.log_temperature.exp()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@hookimpl
def register_objectives(register):
    register(ContrastivePrompt)
