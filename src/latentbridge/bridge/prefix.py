"""A few-shot header shared by every prompt, run once: its key/value cache reused in the source forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.api.layout import left_pad, positions_from_mask
from latentbridge.bridge.models import cache_of, with_cache

MIN_SHARED_PREFIX = 32  # tokens: below this, reusing a prefix's key/value cache is not worth it


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every row shares, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


@dataclass
class PrefixState:
    """A shared prefix run once: its key/value cache and its hidden states at the chosen layer."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    hidden: torch.Tensor | None  # 1 P d (None: computed without the hidden states)

    @classmethod
    def compute(cls, model: Any, prefix: Sequence[int], layer: int | None, device: torch.device) -> PrefixState:
        """``prefix`` run once: its cache and the hidden states of ``layer`` (None: the cache only)."""
        ids = torch.tensor([list(prefix)], device=device)
        # a plain cache: every slot of every layer (a sliding layer's would keep only the window's last ones)
        out = model(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None], use_cache=True,
                    output_hidden_states=layer is not None, logits_to_keep=1, **with_cache(model, DynamicCache()))
        kv = [(lay.keys, lay.values) for lay in cache_of(out).layers]
        return cls(kv, None if layer is None else out.hidden_states[layer])

    def cache(self, b: int) -> DynamicCache:
        """A fresh cache holding the prefix for ``b`` rows (the model appends to it in place): a plain one, so
        that a sliding-window model's masks measure its window in positions (:mod:`latentbridge.bridge.windows`)."""
        data = [(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous()) for k, v in self.kv]
        return DynamicCache(ddp_cache_data=data)


def rest_pass(model: Any, rows: Sequence[Sequence[int]], shared: int, state: PrefixState, pad_id: int,
              device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The source over ``rows`` whose first ``shared`` tokens are ``state``'s prefix: only the rest is run,
    left-padded after the prefix's cache (``[prefix][pad][rest]``, positions counted from the mask). Returns
    the model's output (hidden states of every layer, the cache with the prefix in front), the rest's mask
    ``b w`` and the whole mask ``b (shared + w)``."""
    rest_ids, rest_mask = left_pad([r[shared:] for r in rows], pad_id, device)
    b = rest_ids.shape[0]
    mask = torch.cat([torch.ones(b, shared, dtype=rest_mask.dtype, device=device), rest_mask], 1)
    out = model(input_ids=rest_ids, attention_mask=mask, position_ids=positions_from_mask(mask)[:, shared:],
                output_hidden_states=True, logits_to_keep=1, use_cache=True, **with_cache(model, state.cache(b)))
    return out, rest_mask, mask


def cache_pass(model: Any, rows: Sequence[Sequence[int]], shared: int, state: PrefixState, pad_id: int,
               device: torch.device, layer: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """A cache reader's source pass over ``rows`` whose first ``shared`` tokens are ``state``'s prefix
    (:func:`rest_pass`): the hidden states of ``layer``, the mask and every layer's keys and values come back
    laid out as a plain pass over the left-padded rows lays them out (``[pad][prefix][rest]``), so that what
    reads them is unchanged."""
    out, rest_mask, mask = rest_pass(model, rows, shared, state, pad_id, device)
    b, width = rest_mask.shape
    # slot j of the left-padded layout: a pad (j < p), the prefix's slot j - p, or the rest's slot j (unmoved)
    pads = (width - rest_mask.sum(1)).to(device)[:, None]
    j = torch.arange(shared + width, device=device)[None]
    index = torch.where(j < pads, shared + j, torch.where(j < pads + shared, j - pads, j))
    hidden = torch.cat([state.hidden.expand(b, -1, -1), out.hidden_states[layer]], 1)
    hidden = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[2]))
    kv = [tuple(t.gather(2, index[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))
                for t in (lay.keys, lay.values)) for lay in cache_of(out).layers]
    return hidden, mask.gather(1, index), kv
