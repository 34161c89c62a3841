"""Batched greedy evaluation of a causal LM on arith (GSM8K-format) problems."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from latentbridge.api.answers import is_correct
from latentbridge.zoo.arith import Example
from latentbridge.zoo.train import eval_prompt

MAX_NEW_TOKENS = 80


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    batch_size: int = 50,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy continuations of ``Question: q\\nAnswer:`` until eos or ``max_new_tokens``.

    Prompts are left-padded and batched in order of length to limit padding; the
    returned list follows the order of ``questions``.
    """
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    prompts = [eval_prompt(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True)
            gen = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for i, row in zip(chunk, new, strict=True):
                outputs[i] = tokenizer.decode(row, skip_special_tokens=True)
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        tokenizer.padding_side = side
    return outputs


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Fraction of ``examples`` whose greedy generation is correct (strict ``#### N``, the project's scorer)."""
    gens = generate_answers(model, tokenizer, [e["question"] for e in examples], batch_size, progress=progress)
    return sum(is_correct(g, e["answer"]) for g, e in zip(gens, examples, strict=True)) / max(1, len(examples))
