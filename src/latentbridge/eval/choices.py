"""Multiple-choice scoring: the log-likelihood of each choice's continuation after what a system reads.

Every system reads exactly what it reads when it generates (the text baselines their prompt, the
bridged system and its controls the injection's layout of the message and the prompt, the relay the
prompt and the source's output), followed by one choice's continuation as supervised tokens; the
score is the sum of the target's (or the source's) log-probabilities of those tokens. The per-item
record keeps every choice's score, so ``acc``, ``acc_norm`` and the gold choice's NLL can be
recomputed from the file (:func:`choice_fields`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from latentbridge.api.choices import GENERATE, LETTERS, MultipleChoiceTask, choice_predictions
from latentbridge.api.segments import IGNORE_INDEX, TargetInputs, Text
from latentbridge.api.task import Example, Prompt
from latentbridge.bridge.layout import assemble

RowsFor = Callable[[Sequence[int]], TargetInputs]  # each row's choice index -> the inputs to score


def continuation_ids(encoder: Any, prompt: Prompt, continuation: str) -> list[int]:
    """The tokens of ``continuation`` after ``prompt`` (and its answer separator), tokenized in context
    as training tokenizes an answer, without the end-of-text token training appends."""
    answer = list(encoder.target_text(dataclasses.replace(prompt, answer=prompt.separator + continuation)).answer)
    return answer[: len(answer) - len(encoder.eos)] if encoder.eos else answer


@torch.no_grad()
def supervised_logprobs(model: Any, inputs: TargetInputs) -> tuple[list[float], list[bool]]:
    """Per row, the summed log-probability of its supervised tokens (``labels != -100``) and whether
    every one of them is the greedy choice. Only the logits the labels need are computed."""
    labels = inputs.labels
    width = labels.shape[1]
    supervised = labels != IGNORE_INDEX
    if not bool(supervised.any(1).all()):
        raise ValueError("supervised_logprobs: a row without supervised tokens")
    first = int(supervised.float().argmax(1).min())  # the earliest supervised position of any row
    keep = width - first + 1  # the logits at first-1 .. width-1 (the last is never needed)
    logits = inputs.forward(model, logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, width - keep + 1 :].to(logits.device)
    mask = targets != IGNORE_INDEX
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    totals = (picked * mask).sum(1)
    greedy = ((logits.argmax(-1) == targets) | ~mask).all(1)
    return totals.tolist(), greedy.tolist()


def score_rows(model: Any, rows_for: RowsFor, counts: Sequence[int]) -> list[list[float]]:
    """Each item's choice scores: one forward pass per choice index (an item with fewer choices than
    the chunk's most repeats its last one and the extra score is dropped)."""
    scores: list[list[float]] = [[] for _ in counts]
    for c in range(max(counts)):
        picked = [min(c, n - 1) for n in counts]
        totals, _ = supervised_logprobs(model, rows_for(picked))
        for i, n in enumerate(counts):
            if c < n:
                scores[i].append(totals[i])
    return scores


def text_rows(model: Any, encoder: Any, task: MultipleChoiceTask, prompts: Sequence[Prompt],
              items: Sequence[Example]) -> RowsFor:
    """A plain-text system's rows: the prompt as it reads it, then one choice as supervised tokens."""
    contexts = [encoder.prompt_ids(p) for p in prompts]

    def rows_for(picked: Sequence[int]) -> TargetInputs:
        rows = [[Text(ctx), Text(continuation_ids(encoder, p, task.continuation(e, c)), supervised=True)]
                for ctx, p, e, c in zip(contexts, prompts, items, picked, strict=True)]
        return assemble(rows, None, model.embed, model.pad_id)

    return rows_for


def relay_prompt(prompt: Prompt, continuation: str) -> Prompt:
    """The prompt the relay's target reads before the choices: the cue followed by the source's output."""
    return dataclasses.replace(prompt, cue=prompt.cue + continuation)


def bridged_rows(bridge: Any, message: Any, task: MultipleChoiceTask, prompts: Sequence[Prompt],
                 items: Sequence[Example]) -> RowsFor:
    """The bridged system's rows: the injection's layout of ``message`` and the prompts, one choice supervised."""
    encoder = bridge.target_encoder

    def rows_for(picked: Sequence[int]) -> TargetInputs:
        answers = [((), continuation_ids(encoder, p, task.continuation(e, c)))
                   for p, e, c in zip(prompts, items, picked, strict=True)]
        return bridge.bridged_inputs(message, prompts, with_answer=True, answers=answers)

    return rows_for


def choice_fields(task: MultipleChoiceTask, example: Example, system: str, scores: Sequence[float] | None,
                  text: str | None) -> dict[str, Any]:
    """A record's fields for one system on one item: every choice's log-probability, ``acc`` (the
    primary ``<system>_correct``, with the chosen letter as ``<system>_extracted``), ``acc_norm``, the
    gold choice's NLL and, when the system generated, the choice its output names."""
    if scores is None:
        return {f"{system}_{key}": None for key in ("choice_logprobs", "extracted", "correct", "correct_acc_norm",
                                                     "gold_nll", "correct_generate", "generated_choice")}
    lengths = [len(c) for c in task.continuations(example)]
    by_sum, by_norm = choice_predictions(scores, lengths)
    named = None if text is None else task.extract_answer(text, GENERATE, example)
    return {
        f"{system}_choice_logprobs": [float(s) for s in scores],
        f"{system}_extracted": LETTERS[by_sum],
        f"{system}_correct": by_sum == example.gold,
        f"{system}_correct_acc_norm": by_norm == example.gold,
        f"{system}_gold_nll": -float(scores[example.gold]),
        f"{system}_generated_choice": named,
        f"{system}_correct_generate": None if text is None else named == task.gold_answer(example),
    }
