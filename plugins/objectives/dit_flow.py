"""Objective ``dit_flow``: the DiT's rectified-flow loss toward the recipe's teacher.

The teacher is the target-side embedding sequence of the gold answer (``teacher: answer``) or of
the question (``teacher: prompt``), resampled to the k soft positions (k equal chunks, averaged; see
:func:`latentbridge.nn.resample.resample_weights`) and scaled to unit RMS per token, the DiT's data space.
The teacher only ever appears as the regression target: the soft tokens the target reads come from
the DiT's sampler, which never sees it.
"""

from __future__ import annotations

import torch

from latentbridge import BuildContext, LatentBridgeError, Objective, ObjectiveConfig, StepContext, hookimpl
from latentbridge.nn.resample import resample_weights


class DiTFlow(Objective):
    """Rectified-flow velocity regression of the DiT translator toward the teacher embeddings."""

    name = "dit_flow"
    Config = ObjectiveConfig
    needs = frozenset({"teacher_embeds"})

    def __init__(self, config: ObjectiveConfig, ctx: BuildContext):
        super().__init__(config, ctx)
        translator = ctx.translator
        if translator is not None and not hasattr(translator, "flow_loss"):
            raise LatentBridgeError(
                f"objectives.dit_flow needs a translator with a flow loss (dit), not '{translator.name}'"
            )

    def compute(self, step: StepContext) -> torch.Tensor:
        k = step.soft.shape[1]
        teacher = torch.stack([resample_weights(k, e.shape[0]).to(e.device) @ e for e in step.get("teacher_embeds")])
        teacher = teacher / teacher.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
        h, mask = step.source_hidden
        return step.translator.flow_loss(h.to(teacher.dtype), mask, teacher, step.seeds)


@hookimpl
def register_objectives(register):
    register(DiTFlow)
