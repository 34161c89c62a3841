"""Batched greedy decoding from ``inputs_embeds`` with a key/value cache and stop strings.

The prompt is laid out by :func:`latentbridge.bridge.layout.assemble` (left padding, positions from the
mask), exactly as in training (for a key/value message, after the cache it holds); each new token's position continues from its own row's last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from latentbridge.api.segments import TargetInputs
from latentbridge.bridge.models import cache_of, with_cache

STOP_WINDOW = 16  # tokens decoded to look for a stop string that has just been generated


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    stopped_by: str  # "eos", "stop:<string>", or "length"


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest stop string, and which one (or None)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        if stop and (at := text.find(stop)) >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return (text, None) if best is None else (text[: best[0]], best[1])


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    inputs: TargetInputs,
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    stop: Sequence[str] = (),
) -> list[Generation]:
    """Greedy continuations of every row of ``inputs`` (``b L d`` embeddings)."""
    with inputs.patched(model):  # a message acting inside the model acts on the prompt and every decoding step
        return _decode(model, tokenizer, inputs, max_new_tokens=max_new_tokens, eos_ids=eos_ids, stop=stop)


def _decode(model: Any, tokenizer: Any, inputs: TargetInputs, *, max_new_tokens: int, eos_ids: set[int],
            stop: Sequence[str]) -> list[Generation]:
    b = inputs.inputs_embeds.shape[0]
    mask = inputs.attention_mask
    positions = inputs.position_ids
    out = model(  # a key/value message's cache comes in model_kwargs; the text continues it
        **inputs.model_kwargs(), use_cache=True, logits_to_keep=1,  # only the last position's logits to start
    )
    past = cache_of(out)
    logits = out.logits[:, -1]
    tokens: list[list[int]] = [[] for _ in range(b)]
    texts = [""] * b
    why = ["length"] * b
    done = [False] * b
    next_pos = positions[:, -1:] + 1
    for _ in range(max_new_tokens):
        next_token = logits.argmax(-1)
        for r, token in enumerate(next_token.tolist()):
            if done[r]:
                continue
            if token in eos_ids:
                done[r], why[r] = True, "eos"
                continue
            tokens[r].append(token)
            # a stop string that just appeared ends in the last few tokens: decode only those (the
            # final text is cut on the full decode below, so this only decides when to stop early)
            if stop and (hit := cut_at_stop(tokenizer.decode(tokens[r][-STOP_WINDOW:], skip_special_tokens=True), stop)[1]):
                done[r], why[r] = True, f"stop:{hit}"
        if all(done):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=next_token[:, None], attention_mask=mask, position_ids=next_pos, **with_cache(model, past),
            use_cache=True,
        )
        past, logits = cache_of(out), out.logits[:, -1]
        next_pos = next_pos + 1
    results = []
    for r in range(b):
        text = tokenizer.decode(tokens[r], skip_special_tokens=True)
        text, _ = cut_at_stop(text, stop)
        texts[r] = text
        results.append(Generation(text=text, token_ids=tokens[r], stopped_by=why[r]))
    return results
