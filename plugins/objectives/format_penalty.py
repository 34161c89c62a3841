"""Objective ``format_penalty``: where the target's own greedy continuation drifts off the format, teach it
to end with the ``#### N`` line.

Under teacher forcing the format line is three easy tokens copied from the line before (the first design
of this term carried 0.06% of the answer loss's gradient); invalid outputs come from free-running
generation, where the target writes its own solution and stops without a ``#### <number>`` line. So each
step this term lets the target continue the bridged input greedily, as at evaluation (no gradient,
``max_new_tokens``, stopping at ``stop`` or end-of-text), on ``rows`` rows of the batch. For each row
whose continuation holds no ``#### <number>`` (strict filter), it appends the format line with the
gold answer, ``\\n#### <gold>`` and end-of-text, after the target's own continuation, and scores it:

    loss = cross-entropy of [bridged input][own continuation][\\n#### gold</s>] on the format line's tokens

with gradient to the soft tokens through the re-read input. Rows that are already in format contribute
nothing; a batch with none invalid gives 0. The continuation is the target's, not the gold solution's,
so the term acts on the states the model is in when it drifts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from latentbridge.plugins.objectives.nll import answer_nll

from latentbridge import Objective, ObjectiveConfig, StepContext, hookimpl, option
from latentbridge.api.answers import extract_answer
from latentbridge.bridge.generation import greedy_generate


@dataclass
class FormatPenaltyConfig(ObjectiveConfig):
    max_new_tokens: int = option(64, gt=0, help="length of the free-running continuation (as eval.max_new_tokens)")
    rows: int | None = option(4, gt=0, help="rows of each batch that get a continuation (null: all; cost grows with it)")
    stop: list[str] = option(default_factory=lambda: ["\n\n"], help="stop strings of the continuation (as eval.stop)")


class FormatPenalty(Objective):
    """On the target's own greedy continuation: cross-entropy of the `#### N` line where the output lacks one."""

    name = "format_penalty"
    Config = FormatPenaltyConfig
    needs = frozenset()
    after_cached_lead = False  # it selects rows of the inputs

    def compute(self, step: StepContext) -> torch.Tensor:
        target, c = step.target, self.config
        rows = list(range(len(step.texts)))[: c.rows]
        tokenizer = target.tokenizer
        with torch.no_grad():
            prompt_inputs = step.relayout(step.soft.detach(), with_answer=False)
            outs = greedy_generate(target.model, tokenizer, _rows(prompt_inputs, rows), max_new_tokens=c.max_new_tokens,
                                   eos_ids=target.eos_ids(), stop=c.stop)
        answers, scored = [], []
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for r in range(len(step.texts)):
            out = outs[rows.index(r)] if r in rows else None
            gold = extract_answer(step.examples[r].answer) if step.examples else None
            if out is None or gold is None or extract_answer(out.text, "strict") is not None:
                answers.append(((), ()))
                continue
            own = tokenizer(out.text.rstrip(), add_special_tokens=False)["input_ids"]
            answers.append((own, tokenizer(f"\n#### {gold}", add_special_tokens=False)["input_ids"] + eos))
            scored.append(r)
        if not scored:
            return step.soft.sum() * 0.0
        inputs = step.relayout(step.soft, answers=answers)  # rows without a penalty read no answer
        keep = torch.tensor(scored, device=step.soft.device)
        width = int((inputs.labels[keep] != -100).sum(1).max()) + 1
        logits = target.model(**_index(inputs, keep).model_kwargs(), logits_to_keep=width).logits
        return answer_nll(logits, inputs.labels[keep][:, -width:])


def _rows(inputs, rows: list[int]):
    return _index(inputs, torch.tensor(rows, device=inputs.attention_mask.device))


def _index(inputs, index: torch.Tensor):
    return dataclasses.replace(inputs, **{f.name: getattr(inputs, f.name)[index] for f in dataclasses.fields(inputs)
                                          if getattr(inputs, f.name) is not None})


@hookimpl
def register_objectives(register):
    register(FormatPenalty)
