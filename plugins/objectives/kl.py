"""Objective ``kl``: distillation from the target reading the literal question.

Teacher: the frozen target on ``[prefix][prompt][answer]`` (the question as text, no soft tokens).
Student: the target on the recipe's bridged input followed by the same answer. Both sequences end
with the answer (left padding), so their answer positions line up from the right. The loss is
``tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))`` per answer position, averaged over the
supervised positions (optionally only the first ``answer_tokens`` of each answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.api.segments import IGNORE_INDEX


@dataclass
class KLConfig(ObjectiveConfig):
    temperature: float = option(1.0, gt=0, help="softmax temperature of teacher and student (loss scaled by tau^2)")
    answer_tokens: int | None = option(None, gt=0, help="only the first N answer tokens of each example (null: all)")


def answer_positions(labels: torch.Tensor, width: int, limit: int | None) -> torch.Tensor:
    """``b width`` mask of the last ``width`` label positions that are supervised (and within ``limit``)."""
    mask = labels[:, -width:] != IGNORE_INDEX
    if limit is not None:
        mask = mask & (mask.long().cumsum(-1) <= limit)
    return mask


def token_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` at each position of ``... V`` logits: ``...``."""
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="none").sum(-1)


class KL(Objective):
    """KL(teacher || bridged) on the answer, the teacher being the target reading the literal question."""

    name = "kl"
    Config = KLConfig
    needs = frozenset({"logits", "teacher_logits", "teacher_inputs"})
    messages = None  # reads the target's logits only: trains any message kind

    def compute(self, step: StepContext) -> torch.Tensor:
        student, teacher = step.logits, step.get("teacher_logits")  # both: the last W positions
        labels = step.inputs.labels
        # the longest answer fits in the last `width` positions of both (answers end at the right edge)
        width = int((labels != IGNORE_INDEX).sum(1).max())
        mask = answer_positions(labels, width, self.config.answer_tokens)
        teacher_mask = answer_positions(step.get("teacher_inputs").labels, width, self.config.answer_tokens)
        if not torch.equal(mask, teacher_mask):
            raise RuntimeError("kl: teacher and student answers are not aligned")
        tau = self.config.temperature
        s = student[:, -width - 1 : -1].float() / tau  # logits predicting the answer tokens
        t = teacher[:, -width - 1 : -1].float() / tau
        kl = token_kl(s, t)
        return (kl * mask).sum() / mask.sum() * tau**2


@hookimpl
def register_objectives(register):
    register(KL)
