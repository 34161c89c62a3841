"""Objective ``rope_phase``: the target's attention reads the soft tokens, at their real positions, as it
reads the question's tokens at theirs.

In each of the target's first ``layers`` layers, take the queries of the positions that predict the
answer (they are the same tokens in both sequences: the answers end at the right edge) and the keys and
values the model's own attention computes (after its rotary embedding, so every query-key score depends
on the two positions; see :func:`latentbridge.nn.keys.capture_attention`). The student is the bridged
input, whose message is the soft tokens at the positions they occupy; the teacher is the target reading
the literal prompt, whose message is this question's own tokens. Per layer, head and query position:

    readout = sum_j softmax_j(q . k_j * scale) v_j     over the message's positions j only
    mass    = the share of the query's full attention (all earlier positions) that goes to the message

and the loss, averaged over layers, heads and query positions, is

    (1 - cos(readout_student, readout_teacher))  +  mass_weight * (log mass_student - log mass_teacher)^2

so the soft tokens are pulled to be read like the question is read: at a relative distance, in a
rotary phase, with a weight the target's attention itself decides. Changing the soft tokens' positions
or the rotary base changes the loss; with the rotation removed it is another loss. Models without rotary
embeddings are refused by ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.api.segments import IGNORE_INDEX
from latentbridge.nn.keys import Captured, capture_attention


@dataclass
class RopePhaseConfig(ObjectiveConfig):
    layers: int = option(2, gt=0, help="how many of the target's first layers to align")
    mass_weight: float = option(0.5, ge=0, help="weight of the attention-mass term against the readout term")


MASKED = -1e9


def answer_queries(labels: torch.Tensor, width: int) -> torch.Tensor:
    """``b width`` mask over the last ``width`` positions: those whose next token is a supervised answer token."""
    supervised = labels[:, 1:] != IGNORE_INDEX
    return F.pad(supervised, (0, 1))[:, -width:]


def message_attention(c: Captured, queries: slice, message: torch.Tensor, valid: torch.Tensor):
    """Readout over the message and the share of attention it gets, for the queries in ``queries``.

    ``message``: ``b L`` bool, the message's key positions; ``valid``: ``b L`` bool, the real positions.
    Returns ``readout b H Q e`` and ``log_mass b H Q``."""
    q = c.query[:, :, queries].float()
    k = c.key.float().repeat_interleave(c.groups, dim=1)
    v = c.value.float().repeat_interleave(c.groups, dim=1)
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) * c.scaling
    length = k.shape[2]
    positions = torch.arange(length, device=q.device)
    causal = positions[None, :] <= positions[queries][:, None]  # Q L
    allowed = causal[None, None] & valid[:, None, None, :]
    # a large finite value, not -inf: a query with nothing to attend to (padding, no message yet) must give a
    # finite value and a zero gradient (the caller leaves it out); -inf would give NaN in the backward pass
    scores = scores.masked_fill(~allowed, MASKED)
    on_message = allowed & message[:, None, None, :]
    log_all = torch.logsumexp(scores, dim=-1)
    msg_scores = scores.masked_fill(~on_message, MASKED)
    log_message = torch.logsumexp(msg_scores, dim=-1)
    readout = torch.einsum("bhqk,bhke->bhqe", torch.softmax(msg_scores, dim=-1), v)
    return readout, log_message - log_all


class RopePhase(Objective):
    """The target's attention from the answer positions reads the soft tokens (at their positions) as it reads the question's tokens."""

    name = "rope_phase"
    Config = RopePhaseConfig
    needs = frozenset({"window", "teacher_inputs"})
    after_cached_lead = False  # it reads attention over the whole row

    @classmethod
    def check_models(cls, source, target, config: RopePhaseConfig) -> list[str]:
        if not target.rotary:
            return [f"needs a target with rotary position embeddings; {target.name} ({target.model_type}) has none"]
        if config.layers > target.num_layers:
            return [f"layers is {config.layers} but {target.name} has {target.num_layers} layers"]
        return []

    def compute(self, step: StepContext) -> torch.Tensor:
        model = step.target.model
        teacher_inputs = step.get("teacher_inputs")
        width = step.get("window")
        student_queries = answer_queries(step.inputs.labels, width)
        if not torch.equal(student_queries, answer_queries(teacher_inputs.labels, width)):
            raise RuntimeError("rope_phase: the answer positions of student and teacher are not aligned")
        rows = student_queries.any(0)  # window positions that are a query in some row
        with torch.no_grad():
            teacher = capture_attention(model, teacher_inputs, self.config.layers)
        student = capture_attention(model, step.inputs, self.config.layers)
        student_message = step.inputs.soft_mask.bool()
        teacher_message = question_positions(step, teacher_inputs)
        losses = []
        for s, t in zip(student, teacher, strict=True):
            keep = student_queries[:, None, :][:, :, rows]  # b 1 Q
            s_read, s_mass = message_attention(s, _window_slice(s, width), student_message, step.inputs.attention_mask.bool())
            t_read, t_mass = message_attention(t, _window_slice(t, width), teacher_message, teacher_inputs.attention_mask.bool())
            s_read, t_read, s_mass, t_mass = (x[:, :, rows] for x in (s_read, t_read, s_mass, t_mass))
            readout = 1 - F.cosine_similarity(s_read, t_read, dim=-1)  # b H Q
            mass = (s_mass - t_mass).pow(2)
            keep = keep.expand_as(readout)
            term = torch.where(keep, readout + self.config.mass_weight * mass, torch.zeros_like(readout))
            losses.append(term.sum() / keep.sum())
        return torch.stack(losses).mean()


def _window_slice(c: Captured, width: int) -> slice:
    length = c.query.shape[2]
    return slice(length - width, length)


def question_positions(step: StepContext, teacher_inputs) -> torch.Tensor:
    """``b L`` bool: where this question's own tokens sit in the teacher's input (``[pad][prefix][prompt][answer]``)."""
    b, length = teacher_inputs.attention_mask.shape
    mask = torch.zeros(b, length, dtype=torch.bool, device=teacher_inputs.attention_mask.device)
    for r, text in enumerate(step.texts):
        start = length - (len(text.prefix) + len(text.prompt) + len(text.answer)) + len(text.prefix)
        q0, q1 = text.question_span
        mask[r, start + q0 : start + q1] = True
    return mask


@hookimpl
def register_objectives(register):
    register(RopePhase)
