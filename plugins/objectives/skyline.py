"""Objective ``skyline``: the target reading the message should compute what it computes reading everything
the source reads (the skyline), at the positions that write the answer.

Teacher: the frozen target on ``[prefix][source's prompt][answer]``, the prompt the ``skyline`` system hands
it (a context-split task: the context and the question; elsewhere the source's prompt). Student: the
target on the recipe's bridged input followed by the same answer. Both sequences end with the answer (left
padding), so the positions that predict the answer tokens line up from the right, as ``kl``'s do. At those
positions, two terms:

- ``states``: the mean squared difference of the hidden states after every layer (the last one after the
  model's final norm, as transformers returns it), each layer's divided by the mean square of the
  teacher's there (so every layer weighs alike, whatever its scale), averaged over the layers and the
  supervised positions;
- ``logits``: ``KL(skyline || bridged)`` of the next-token distributions, as ``kl`` computes it.

A denser signal than the answer's cross-entropy for a channel that must carry what the target would
have read (``kv_translate``'s translated context): every layer's state at every answer position says what
the target should have found there, not only the answer's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from latentbridge.plugins.objectives.kl import answer_positions, token_kl

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.api.context import StepQuantity
from latentbridge.api.segments import Text
from latentbridge.bridge.layout import assemble


@dataclass
class SkylineConfig(ObjectiveConfig):
    states: float = option(1.0, ge=0, help="weight of the hidden-state term (every layer, normalised per layer)")
    logits: float = option(0.0, ge=0, help="weight of KL(skyline || bridged) on the next-token distributions")


def _skyline_inputs(ctx: StepContext):
    enc = ctx.bridge.target_encoder
    rows = []
    for prompt, own in zip(ctx.prompts, ctx.texts, strict=True):
        text = enc.target_text(prompt.for_source)
        if text.answer != own.answer:
            raise RuntimeError("skyline: the skyline's answer differs from the bridged input's")
        rows.append([Text(text.prefix), Text(text.prompt), Text(text.answer, supervised=True)])
    return assemble(rows, None, ctx.target.embed, ctx.target.pad_id)


def _states(ctx: StepContext, inputs, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's hidden states (``layers b W d``) and the logits (``b W V``), last ``W`` positions."""
    window = ctx.get("window")
    with torch.set_grad_enabled(grad):
        out = inputs.forward(ctx.target.model, output_hidden_states=True, logits_to_keep=window)
    states = torch.stack([h[:, -window:] for h in out.hidden_states[1:]])
    return states.to(inputs.labels.device), out.logits.to(inputs.labels.device)


class Skyline(Objective):
    """The bridged target's hidden states (and optionally logits) pulled to the skyline's at the answer."""

    name = "skyline"
    Config = SkylineConfig
    needs = frozenset({"window", "skyline_inputs", "skyline_outputs", "bridged_outputs"})
    messages = None  # reads the target's states only: trains any message kind

    def compute(self, step: StepContext) -> torch.Tensor:
        window = step.get("window")
        width = window - 1
        mask = answer_positions(step.inputs.labels, width, None)
        if not torch.equal(mask, answer_positions(step.get("skyline_inputs").labels, width, None)):
            raise RuntimeError("skyline: the skyline's answers and the bridged input's are not aligned")
        student, student_logits = step.get("bridged_outputs")
        teacher, teacher_logits = step.get("skyline_outputs")
        s, t = student[:, :, :-1].float(), teacher[:, :, :-1].float()  # the positions predicting the answer
        m = mask.to(s.dtype)
        scale = (((t**2).mean(-1) * m).sum((1, 2)) / m.sum()).clamp_min(1e-12)  # per layer: the teacher's mean square
        error = ((s - t) ** 2).mean(-1)  # layers b W
        loss = ((error * m).sum((1, 2)) / m.sum() / scale).mean() * self.config.states
        if self.config.logits:
            kl = token_kl(student_logits[:, :-1].float(), teacher_logits[:, :-1].float())
            loss = loss + (kl * m).sum() / m.sum() * self.config.logits
        return loss


@hookimpl
def register_objectives(register):
    register(Skyline)


@hookimpl
def register_step_quantities(register):
    register(StepQuantity("skyline_inputs", _skyline_inputs,
                          "TargetInputs: the target reading everything the source reads (the skyline's prompt) and "
                          "the same answer"))
    register(StepQuantity("skyline_outputs", lambda ctx: _states(ctx, ctx.get("skyline_inputs"), grad=False),
                          "(layers b W d, b W V): the target's hidden states after every layer and its logits on "
                          "skyline_inputs, last W positions, no gradient"))
    register(StepQuantity("bridged_outputs", lambda ctx: _states(ctx, ctx.inputs, grad=True),
                          "(layers b W d, b W V): the target's hidden states after every layer and its logits on the "
                          "bridged input, last W positions, with gradient to the message"))
