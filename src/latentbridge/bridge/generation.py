"""Batched greedy decoding from ``inputs_embeds`` with a key/value cache and stop strings.

The prompt is laid out by :func:`latentbridge.bridge.layout.assemble` (left padding, positions from the
mask), exactly as in training (for a key/value message, after the cache it holds); each new token's position continues from its own row's last position.

With ``keep`` the decoding also hands back what the model computed on the way (:class:`Kept`): the hidden
states of the layers named over the prompt and every generated token it read. The latent relay reads the source's states over prompt + solution from there, without a second pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass
class Kept:
    """What the model computed while decoding a batch: ``b T ...`` over the ``L`` prompt positions (left
    padded, ``mask``) then one position per decoding step. Row ``r`` read ``read[r]`` of its generated
    tokens (a token is read at the step after it was chosen; the tokens chosen at the last step, when every
    row had stopped or the length ran out, were never read)."""

    mask: torch.Tensor  # b L: the prompt's real positions
    hidden: dict[int, torch.Tensor]  # layer -> b T d
    read: list[int]

    def positions(self, row: int, n_generated: int) -> torch.Tensor:
        """Indices along ``T`` of row ``row``'s prompt tokens and its first ``n_generated`` generated ones."""
        if n_generated > self.read[row]:
            raise ValueError(f"row {row} read {self.read[row]} generated tokens, not {n_generated}")
        prompt = self.mask[row].nonzero().flatten()
        length = self.mask.shape[1]
        return torch.cat([prompt, torch.arange(length, length + n_generated, device=prompt.device)])


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
    keep: Sequence[int] | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> list[Generation] | tuple[list[Generation], Kept]:
    """Greedy continuations of every row of ``inputs`` (``b L d`` embeddings); with ``keep`` (indices into
    ``hidden_states``: 0 is the embeddings), also those layers' states computed on the way (:class:`Kept`).
    ``interrupt``, asked before every decoding step, stops the batch (:class:`DecodingInterrupted`)."""
    with inputs.patched(model):  # a message acting inside the model acts on the prompt and every decoding step
        return _decode(model, tokenizer, inputs, max_new_tokens=max_new_tokens, eos_ids=eos_ids, stop=stop,
                       keep=keep, interrupt=interrupt)


class DecodingInterrupted(Exception):
    """A decoding stopped before its end because ``interrupt`` said so (nothing of the batch is kept)."""


def _decode(model: Any, tokenizer: Any, inputs: TargetInputs, *, max_new_tokens: int, eos_ids: set[int],
            stop: Sequence[str], keep: Sequence[int] | None = None,
            interrupt: Callable[[], bool] | None = None) -> list[Generation] | tuple[list[Generation], Kept]:
    b = inputs.inputs_embeds.shape[0]
    mask = inputs.attention_mask
    extra = {"output_hidden_states": True} if keep is not None else {}
    out = model(  # a key/value message's cache comes in model_kwargs; the text continues it
        **inputs.model_kwargs(), use_cache=True, logits_to_keep=1, **extra,  # only the last position's logits to start
    )
    hidden = {i: [out.hidden_states[i]] for i in keep} if keep is not None else {}
    fed = 0
    past = cache_of(out)
    logits = out.logits[:, -1]
    tokens: list[list[int]] = [[] for _ in range(b)]
    texts = [""] * b
    why = ["length"] * b
    done = [False] * b
    next_pos = inputs.first_new_position()
    for _ in range(max_new_tokens):
        if interrupt is not None and interrupt():
            raise DecodingInterrupted
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
        if inputs.step is not None:  # what this token writes to the cache is the message's (c2c include_response)
            inputs.step(past, next_token[:, None], mask, next_pos)
        out = model(
            input_ids=next_token[:, None], attention_mask=mask, position_ids=next_pos, **with_cache(model, past),
            use_cache=True, **extra,
        )
        past, logits = cache_of(out), out.logits[:, -1]
        next_pos = next_pos + 1
        fed += 1
        for i, states in hidden.items():
            states.append(out.hidden_states[i])
    results = []
    for r in range(b):
        text = tokenizer.decode(tokens[r], skip_special_tokens=True)
        text, _ = cut_at_stop(text, stop)
        texts[r] = text
        results.append(Generation(text=text, token_ids=tokens[r], stopped_by=why[r]))
    if keep is None:
        return results
    kept = Kept(mask=inputs.attention_mask[:, -inputs.inputs_embeds.shape[1]:],
                hidden={i: torch.cat(h, 1) for i, h in hidden.items()}, read=[min(len(t), fed) for t in tokens])
    return results, kept
