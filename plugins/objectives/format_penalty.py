"""Objective ``format_penalty``: cross-entropy on the answer's format tokens, the ``#### <number>`` line.

A differentiable way to keep outputs in the scored format: the target's next-token loss restricted to
the tokens of the final ``#### N`` line and the end-of-text token (the plain ``nll`` weighs them like
any other token). ``scale_with: prompt_alignment`` ties its weight to that objective's, as the seed's
action items proposed.
"""

from __future__ import annotations

import torch
from latentbridge.plugins.objectives.nll import answer_nll

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl
from latentbridge.api.segments import IGNORE_INDEX


class FormatPenalty(Objective):
    """Next-token loss on the answer's final '#### <number>' line and end-of-text token only."""

    name = "format_penalty"
    Config = ObjectiveConfig
    needs = frozenset({"logits"})

    def compute(self, step: StepContext) -> torch.Tensor:
        labels = step.logit_labels
        format_labels = torch.full_like(labels, IGNORE_INDEX)
        for r, text in enumerate(step.texts):
            n = len(text.answer) - text.format_start
            if n > 0:  # an answer without a '####' line (and no end-of-text token) has nothing to score
                format_labels[r, -n:] = labels[r, -n:]
        if not (format_labels[:, 1:] != IGNORE_INDEX).any():  # no row of this batch has a format line
            return step.logits.sum() * 0.0
        return answer_nll(step.logits, format_labels)


@hookimpl
def register_objectives(register):
    register(FormatPenalty)
