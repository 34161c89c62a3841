"""Where a context split's context lies in the rows the source reads.

A context-split task's source reads its prompt with the context in it (``task.context_template``, by default
``{context} {question}``, then the cue); a translator of the context (``kv_translate``) reads the source's
cache at the context's tokens only. Causal attention makes those positions' keys and values depend on the
tokens up to them and on none after, so the source can stop after the context's last token
(:func:`cut_after_context`): the same cache there, without what follows (with the default template, the
question and the cue). :func:`cut_is_exact` says where that holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentbridge.api.task import Prompt
from latentbridge.errors import LatentBridgeError

Spans = Sequence[tuple[int, int]]


def _inside(prompt: Prompt, spans: Spans) -> list[int]:
    """Indices of the row's tokens whose characters overlap the prompt's context (``spans``: each token's
    characters in the prompt's text, ``(0, 0)`` for a special token)."""
    span = prompt.own_context_span()
    if span is None or span[1] <= span[0]:
        return []
    return [i for i, (a, b) in enumerate(spans) if b > a and a < span[1] and b > span[0]]


def context_tokens(prompts: Sequence[Prompt], offsets: Sequence[Spans], mask: torch.Tensor) -> list[tuple[int, int]]:
    """Per row, ``[start, end)``: the indices in the left-padded row of the tokens whose characters overlap the
    prompt's context (:meth:`Prompt.own_context_span`); ``(t, t)`` for a row without one. A row's real tokens
    start after its padding, the prompt first (a solution read after it does not move them)."""
    t = mask.shape[1]
    out = []
    for prompt, spans, real in zip(prompts, offsets, mask.sum(1).tolist(), strict=True):
        inside = _inside(prompt, spans)
        start = t - int(real)
        out.append((start + inside[0], start + inside[-1] + 1) if inside else (t, t))
    return out


def _length_dependent(rope_type: str) -> bool:
    """Rotary tables whose frequencies follow the longest position in the batch, as transformers'
    ``dynamic_rope_update`` decides (any ``dynamic`` type, ``longrope``): a row cut shorter can change them,
    and with them the keys at the context's positions."""
    return "dynamic" in rope_type or rope_type == "longrope"


def _rope_types(parameters: object) -> set[str]:
    """Every ``rope_type`` in a config's ``rope_parameters`` (one table, or one per layer type)."""
    if not isinstance(parameters, dict):
        return set()
    found = {parameters["rope_type"]} if isinstance(parameters.get("rope_type"), str) else set()
    for value in parameters.values():
        found |= _rope_types(value)
    return found


def cut_is_exact(model: object) -> bool:
    """Whether the source's cache at a position depends on the tokens up to it only, so that
    :func:`cut_after_context` changes nothing there: not under bidirectional attention over text (a Gemma
    config's ``use_bidirectional_attention``, ``is_causal: false``), nor with rotary frequencies chosen from
    the batch's longest position (``dynamic``, ``longrope``). What a remote-code model does without saying
    so in its config (Qwen-1's ``use_dynamic_ntk``) is not seen here."""
    config = model.config.get_text_config()
    bidirectional = getattr(config, "use_bidirectional_attention", False)  # Gemma-4's "vision": images only
    if bidirectional is True or bidirectional == "all" or getattr(config, "is_causal", True) is False:
        return False
    types = _rope_types(getattr(config, "rope_parameters", None)) | _rope_types(getattr(config, "rope_scaling", None))
    return not any(_length_dependent(t) for t in types)


def cut_after_context(rows: Sequence[list[int]], prompts: Sequence[Prompt], offsets: Sequence[Spans]) -> list[list[int]]:
    """Each row up to and including the last token that overlaps its prompt's context (a row without a
    context stays whole): what the source must read for its cache over the context."""
    out = []
    for row, prompt, spans in zip(rows, prompts, offsets, strict=True):
        if len(spans) != len(row):
            raise LatentBridgeError(f"cut_after_context: {len(spans)} token spans for a row of {len(row)} tokens")
        inside = _inside(prompt, spans)
        out.append(list(row[: inside[-1] + 1]) if inside else list(row))
    return out
