"""A few-shot header shared by every prompt, run once: its key/value cache reused in the source forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

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
