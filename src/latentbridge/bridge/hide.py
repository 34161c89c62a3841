"""Cache positions some layers do not see: ``n`` key positions (from ``start``) masked out at chosen layers.

KVComm shares the sender's keys and values at a subset of the receiver's layers; at the others the
sender's positions are left empty; a ``kv_prefix`` message with learned layers reaches only the layers it
chose. The cache of a transformers model has one length for every layer, so
every layer holds the sender's positions and, within :func:`hidden_from`, the layers not chosen mask them
out: a thin attention function (registered with transformers' ``AttentionInterface``, the kernel still
the model's own ``sdpa`` or ``eager``) removes them from the attention mask of those layers, in the pass
over the prompt and in every decoding step. A query that would then see nothing (a padding position
whose only earlier keys were the hidden ones) sees itself, so no row of the softmax is empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from latentbridge.nn.keys import kernel, swapped_attention

# (layers, n, start): key positions [start, start + n) hidden from those layers
_ACTIVE: list[tuple[frozenset[int], int, int]] = []


def hide_keys(mask: torch.Tensor | None, n: int, q_len: int, kv_len: int, dtype: torch.dtype,
              device: torch.device, start: int = 0) -> torch.Tensor:
    """``mask`` (``b 1 q kv``: boolean, True where a query may attend, or additive floats; None: causal)
    with key positions ``[start, start + n)`` masked out, and every query that sees nothing left seeing
    itself."""
    own = torch.arange(q_len, device=device) + (kv_len - q_len)  # each query's own key position
    if mask is None:
        mask = (torch.arange(kv_len, device=device)[None, :] <= own[:, None])[None, None]
    if mask.dtype == torch.bool:
        mask = mask.clone()
        mask[..., start : start + n] = False
        empty = ~mask.any(-1)  # b 1 q
        mask[..., torch.arange(q_len, device=device), own] |= empty
        return mask
    floor = torch.finfo(mask.dtype).min
    mask = mask.clone()
    mask[..., start : start + n] = floor
    empty = (mask <= floor).all(-1)
    diagonal = mask[..., torch.arange(q_len, device=device), own]
    mask[..., torch.arange(q_len, device=device), own] = torch.where(empty, torch.zeros_like(diagonal), diagonal)
    return mask


def _hiding(original: str):
    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any):
        layer = getattr(module, "layer_idx", None)
        if _ACTIVE and layer in _ACTIVE[-1][0]:
            _, n, start = _ACTIVE[-1]
            attention_mask = hide_keys(attention_mask, n, query.shape[2], key.shape[2], query.dtype, query.device,
                                       start)
            kwargs["is_causal"] = False
        return kernel(original, module)(module, query, key, value, attention_mask, **kwargs)

    return attention


@contextlib.contextmanager
def hidden_from(model: Any, layers: Iterable[int], n: int, start: int = 0) -> Iterator[None]:
    """Within the block, ``model``'s decoder ``layers`` do not see key positions ``[start, start + n)``."""
    _ACTIVE.append((frozenset(layers), n, start))
    try:
        with swapped_attention(model, "latentbridge_hide_", _hiding):
            yield
    finally:
        _ACTIVE.pop()
