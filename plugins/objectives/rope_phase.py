"""Objective ``rope_phase``: the soft tokens' rotary-embedded keys match the teacher's, per frequency pair.

In each of the target's first ``layers`` layers, take the attention keys after RoPE at the positions
the soft tokens occupy (or are added onto). Write each rotary pair as a complex number
``z = k[i] + i k[i + d/2]`` (the pairs ``rotate_half`` rotates together), ``z_s`` for the bridged input
and ``z_t`` for the teacher sequence at the same positions. The loss, averaged over layers, heads,
positions and pairs, is

    w * (1 - Re(z_s conj(z_t)) / (|z_s| |z_t|))  +  magnitude_weight * (log|z_s| - log|z_t|)^2

with ``w = |z_t| / mean|z_t|`` (pairs the teacher barely uses count less): the phase term aligns the
angle of every frequency pair, the second its magnitude.

The teacher sequence is the bridged input with the soft tokens replaced by what an ideal translator
would emit for this question: the k chunk means of the question's target embeddings (the
``prompt_alignment`` target), scaled like soft tokens. Same layout, same positions, same context; only
the soft tokens differ, so every difference in the keys is the soft tokens' doing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.nn.keys import rotary_keys


@dataclass
class RopePhaseConfig(ObjectiveConfig):
    layers: int = option(2, gt=0, help="how many of the target's first layers to align")
    magnitude_weight: float = option(0.5, ge=0, help="weight of the log-magnitude term against the phase term")


def as_complex(keys: torch.Tensor) -> torch.Tensor:
    half = keys.shape[-1] // 2
    return torch.complex(keys[..., :half].float(), keys[..., half:].float())


def phase_loss(z_s: torch.Tensor, z_t: torch.Tensor, magnitude_weight: float) -> torch.Tensor:
    mag_s, mag_t = z_s.abs(), z_t.abs()
    cos_delta = (z_s * z_t.conj()).real / (mag_s * mag_t).clamp(min=1e-8)
    weight = mag_t / mag_t.mean().clamp(min=1e-8)
    magnitude = (torch.log(mag_s + 1e-6) - torch.log(mag_t + 1e-6)).pow(2)
    return (weight * (1 - cos_delta)).mean() + magnitude_weight * magnitude.mean()


class RopePhase(Objective):
    """Aligns the rotary-embedded keys the soft tokens produce with the teacher's, in phase and magnitude."""

    name = "rope_phase"
    Config = RopePhaseConfig
    needs = frozenset({"question_chunks"})

    def compute(self, step: StepContext) -> torch.Tensor:
        model = step.target.model
        teacher_soft = step.translator.rescale(step.get("question_chunks").to(step.soft.dtype))
        with torch.no_grad():
            teacher_inputs = step.relayout(teacher_soft)
            teacher_keys = rotary_keys(model, teacher_inputs, self.config.layers)
        student_keys = rotary_keys(model, step.inputs, self.config.layers)
        where = step.inputs.soft_mask
        if where is None or not torch.equal(where, teacher_inputs.soft_mask) or not where.any():
            raise RuntimeError("rope_phase: the soft positions of student and teacher differ")
        losses = []
        for k_s, k_t in zip(student_keys, teacher_keys, strict=True):
            z_s = as_complex(k_s.transpose(1, 2)[where])  # (positions, heads, pairs)
            z_t = as_complex(k_t.transpose(1, 2)[where])
            losses.append(phase_loss(z_s, z_t, self.config.magnitude_weight))
        return torch.stack(losses).mean()


@hookimpl
def register_objectives(register):
    register(RopePhase)
