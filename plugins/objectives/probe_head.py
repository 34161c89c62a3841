"""Objective ``probe_head``: a small trainable head reads the soft tokens and predicts the source prompt.

From the soft tokens alone (flattened), a two-layer MLP predicts (1) the pooled target-side embedding
of the question (cosine distance) and (2) the categorical label the task provides, such as the
problem template (cross-entropy; skipped when the task has no labels). If the soft tokens carry
nothing about the question, neither can be predicted. The head's parameters are trained with the
translator and saved beside it (``objectives.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentbridge import BuildContext, Objective, ObjectiveConfig, StepContext, hookimpl, option


@dataclass
class ProbeHeadConfig(ObjectiveConfig):
    hidden: int = option(128, gt=0, help="hidden width of the probe MLP")
    embedding_weight: float = option(1.0, ge=0, help="weight of the pooled-embedding prediction (inside this term)")
    label_weight: float = option(1.0, ge=0, help="weight of the label prediction (inside this term)")


class ProbeHead(Objective):
    """An MLP on the soft tokens predicts the question's pooled embedding and its task label."""

    name = "probe_head"
    Config = ProbeHeadConfig
    needs = frozenset({"question_pooled"})

    def __init__(self, config: ProbeHeadConfig, ctx: BuildContext):
        super().__init__(config, ctx)
        self.labels = list(ctx.labels)
        self.body = nn.Sequential(nn.Linear(ctx.k * ctx.d_tgt, config.hidden), nn.GELU())
        self.to_embedding = nn.Linear(config.hidden, ctx.d_tgt)
        self.to_label = nn.Linear(config.hidden, len(self.labels)) if self.labels else None

    def compute(self, step: StepContext) -> torch.Tensor:
        soft = step.soft.float()
        features = self.body(soft.flatten(1) / soft.pow(2).mean().add(1e-12).sqrt())
        pooled = step.get("question_pooled").to(features.device)
        loss = self.config.embedding_weight * (1 - F.cosine_similarity(self.to_embedding(features), pooled, dim=-1)).mean()
        if self.to_label is not None:
            index = {label: i for i, label in enumerate(self.labels)}
            targets = torch.tensor([index.get(e.label, -100) for e in step.examples], device=features.device)
            if (targets >= 0).any():
                loss = loss + self.config.label_weight * F.cross_entropy(self.to_label(features), targets, ignore_index=-100)
        return loss


@hookimpl
def register_objectives(register):
    register(ProbeHead)
