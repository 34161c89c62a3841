"""Activation messages: a vector written into the target's residual stream at one layer, at the prompt's
last token (:class:`~latentbridge.api.messages.ActivationPatch`, activation communication).

The target reads its own prompt (``[pad][bos][prompt][answer]``, laid out as for plain text). During the
one forward pass over those inputs, a pre-hook on decoder layer ``j`` changes, in every row, the state
entering that layer at the row's last prompt token: replaced by the row's vector, summed with it, or
averaged with it. Later positions read the changed state through attention, and generation continues
from the cache that pass wrote: the patch acts on the first pass over the inputs only, so it is applied
exactly once. ``hidden_states[j]`` (the
transformers convention: ``0`` the embeddings, ``j`` the output of block ``j - 1``) is the state patched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from latentbridge.api.messages import ActivationPatch
from latentbridge.api.segments import Segment, Soft, TargetInputs
from latentbridge.bridge.layout import assemble
from latentbridge.errors import LatentBridgeError

MODES = ("replace", "sum", "mean")


def decoder_layers(model: Any) -> nn.ModuleList:
    """The model's stack of decoder blocks (``model.layers``, ``language_model.layers``, ``transformer.h``...):
    the module list whose length is the number of hidden layers, a name ending in ``layers`` first."""
    count = int(model.config.get_text_config().num_hidden_layers)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not found:
        raise LatentBridgeError(f"{type(model).__name__}: no list of {count} decoder layers found to patch")
    found.sort(key=lambda item: (not item[0].endswith("layers"), len(item[0])))
    return found[0][1]


def combine(mode: str, state: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """The patched state: ``replace`` (the vector), ``sum`` or ``mean`` of the state and the vector."""
    if mode == "replace":
        return vector
    if mode == "sum":
        return state + vector
    if mode == "mean":
        return (state + vector) / 2
    raise LatentBridgeError(f"activation patch: mode must be one of {', '.join(MODES)}, got {mode!r}")


@contextlib.contextmanager
def patched(model: Any, message: ActivationPatch, columns: Sequence[int], width: int) -> Iterator[None]:
    """Within the block, a forward pass over ``width`` positions has row ``r``'s state entering decoder
    layer ``message.layer`` at column ``columns[r]`` combined with ``message.states[r]``."""
    layer = decoder_layers(model)[message.layer]
    rows = torch.arange(len(columns))
    cols = torch.tensor(list(columns))

    done: list[bool] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if done:  # decoding steps: the prompt's pass already wrote the patch into the cache they read
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != width:
            raise LatentBridgeError(f"activation patch: the first pass covers {hidden.shape[1]} positions, the "
                                    f"patch was made for {width}")
        done.append(True)
        vectors = message.states.to(device=hidden.device, dtype=hidden.dtype)
        r, c = rows.to(hidden.device), cols.to(hidden.device)
        hidden = hidden.clone()
        hidden[r, c] = combine(message.mode, hidden[r, c], vectors).to(hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def activation_inputs(target: Any, message: ActivationPatch, rows: Sequence[Sequence[Segment]],
                      texts: Sequence[Any]) -> TargetInputs:
    """The target reading ``rows`` as plain text, with ``message`` patched in at each row's last prompt token."""
    if any(isinstance(seg, Soft) for row in rows for seg in row):
        raise LatentBridgeError("an activation message is written into the target's own prompt: the injection "
                                "mode must place no soft tokens (patched_prompt)")
    if message.rows() != len(rows):
        raise LatentBridgeError(f"activation patch: {message.rows()} vectors for {len(rows)} rows")
    inputs = assemble(rows, None, target.embed, target.pad_id)
    width = inputs.attention_mask.shape[1]
    lengths = [sum(len(seg.ids) for seg in row) for row in rows]
    columns = [width - n + len(t.prefix) + len(t.prompt) - 1 for n, t in zip(lengths, texts, strict=True)]
    inputs.patch = lambda model: patched(model, message, columns, width)
    return inputs
