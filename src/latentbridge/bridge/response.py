"""C2C's ``include_response``: the response tokens' cache entries fused too, at every decoding step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.api.messages import KVFusion
from latentbridge.bridge.layout import left_pad, positions_from_mask
from latentbridge.bridge.models import with_cache
from latentbridge.errors import LatentBridgeError


@dataclass
class ResponseSource:
    """The sharer, for fusing response tokens: its model and the re-encoding of receiver token ids (one
    sharer id each, :func:`latentbridge.bridge.retokenize.retokenize`)."""

    model: Any  # a FrozenModel
    ids: Callable[[Sequence[int]], list[int]]


class ReplacingCache(DynamicCache):
    """A plain cache that, at its next update of a layer named in ``pending``, stores and returns the keys
    and values given there for the new positions instead of those the model computed: C2C's injection point
    for response tokens (before the cache update and the attention), reached through the cache object."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        swap = self.pending.pop(layer_idx, None)
        if swap is not None:
            if swap[0].shape != key_states.shape or swap[1].shape != value_states.shape:
                raise LatentBridgeError(f"kv_fusion: layer {layer_idx} computed keys {tuple(key_states.shape)} for "
                                        f"the new tokens, the fused response has {tuple(swap[0].shape)}")
            key_states, value_states = swap[0].to(key_states.dtype), swap[1].to(value_states.dtype)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


class ResponseFusion:
    """C2C's ``include_response`` (thu-nics/C2C ``RosettaModel.register_hooks``): each token from the prompt's
    last on writes a fused entry to the receiver's cache. For a block of new tokens (the input of a pass:
    the prompt's last token and the answer; then each decoding step's token):

    * the receiver's own keys and values come from a twin pass that never saw a fusion (the receiver's
      unfused cache of the prompt, continued with the block);
    * the sharer's come from its cache of what it read, continued with the block's tokens re-encoded (for
      the prompt's last token, the entry the sharer already holds: its last one);
    * every receiver layer's new entries are replaced, before its attention reads them, by the fused ones
      (layers the layer map leaves unfused: by the twin's own), as the authors do.

    The twin's and the sharer's caches after the first block are kept; each decoding (each cache made by
    :meth:`cache_factory`) continues copies of them."""

    def __init__(self, target: Any, source: ResponseSource, message: KVFusion, own: list[tuple[torch.Tensor, torch.Tensor]],
                 own_mask: torch.Tensor):
        self.target, self.source, self.message = target, source, message
        self.own, self.own_mask = own, own_mask
        self.start: tuple[list, list, torch.Tensor, torch.Tensor] | None = None  # twin kv, sharer kv, sharer mask, next
        self.session: dict[str, Any] = {}

    @torch.no_grad()
    def _twin(self, cache: DynamicCache, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> None:
        self.target.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **with_cache(self.target.model, cache))

    @torch.no_grad()
    def _sharer(self, cache: DynamicCache, ids: list[list[int]], mask: torch.Tensor) -> torch.Tensor:
        """Run the sharer on ``ids`` (left-padded) after ``cache`` (whose real slots ``mask`` marks); the mask
        of every slot after the pass."""
        model = self.source.model
        new_ids, new_mask = left_pad(ids, model.pad_id, model.device)
        full = torch.cat([mask, new_mask], 1)
        model.model(input_ids=new_ids, attention_mask=full, position_ids=positions_from_mask(full)[:, mask.shape[1]:],
                    use_cache=True, **with_cache(model.model, cache))
        return full

    def _fused(self, twin: DynamicCache, sharer: list[tuple[torch.Tensor, torch.Tensor]], width: int,
               mask: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Every receiver layer's entries for the last ``width`` positions: fused where the map fuses."""
        device, out = self.target.device, {}
        change = self.message.extra.get("delta_map")
        for layer, entry in enumerate(twin.layers):
            ok, ov = entry.keys[:, :, -width:], entry.values[:, :, -width:]
            source_layer = self.message.layers[layer]
            if source_layer is None:
                out[layer] = (ok, ov)
                continue
            sk, sv = (t.to(device) for t in sharer[source_layer])
            fused = self.message.fuse(layer, ok, ov, sk, sv)
            if change is not None:  # a control's change to the fused delta, as over the prompt
                fused = tuple(own + _heads(change(layer, which, _flat(new - own), mask), own)
                              for which, (own, new) in enumerate(zip((ok, ov), fused, strict=True)))
            out[layer] = fused
        return out

    def first_block(self, ids: list[list[int]], mask: torch.Tensor, positions: torch.Tensor
                    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The fused entries of the pass's input (``ids`` per row: the prompt's last token, then the rest;
        left-padded as ``mask``, ``b w``, at ``positions``)."""
        width, device = mask.shape[1], self.target.device
        block, block_mask = left_pad(ids, self.target.pad_id, device)
        if block.shape[1] != width:
            raise LatentBridgeError("kv_fusion: the response block does not match the input's layout")
        twin = DynamicCache(ddp_cache_data=[(k, v) for k, v in self.own])
        self._twin(twin, block, torch.cat([self.own_mask, block_mask], 1), positions)
        # the sharer holds the prompt's last token already (its last slot): it reads the rest of each row
        m = self.message
        sharer = DynamicCache(ddp_cache_data=[(k, v) for k, v in zip(m.keys, m.values, strict=True)])
        rest = [self.source.ids(row[1:]) for row in ids]
        sharer_mask = self._sharer(sharer, rest, m.mask.to(self.source.model.device)) if width > 1 else \
            m.mask.to(self.source.model.device)
        lengths = [len(r) for r in rest]
        entries = []
        for layer in sharer.layers:  # [last slot of the prompt][rest], laid out as the receiver's block
            per = []
            for t in (layer.keys, layer.values):
                out = t.new_zeros(t.shape[0], t.shape[1], width, t.shape[3])
                if width > 1:
                    out[:, :, 1:] = t[:, :, -(width - 1):]
                for row, n in enumerate(lengths):
                    out[row, :, width - 1 - n] = t[row, :, m.keys[0].shape[2] - 1]
                per.append(out)
            entries.append((per[0], per[1]))
        self.start = ([(e.keys, e.values) for e in twin.layers], [(e.keys, e.values) for e in sharer.layers],
                      sharer_mask, positions_from_mask(sharer_mask)[:, -1:] + 1)
        return self._fused(twin, entries, width, mask)

    def cache_factory(self, kv: list[tuple[torch.Tensor, torch.Tensor]],
                      first: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], dict[str, Any]]:
        """A fresh cache per pass: the fused prompt, replacing the input's entries by ``first``; a decoding
        that continues it continues fresh copies of the twin's and the sharer's caches."""

        def make() -> dict[str, Any]:
            cache = ReplacingCache(ddp_cache_data=[(k, v) for k, v in kv])
            cache.pending = dict(first)
            twin, sharer, sharer_mask, next_pos = self.start
            self.session = {"cache": cache, "twin": DynamicCache(ddp_cache_data=list(twin)),
                            "sharer": DynamicCache(ddp_cache_data=list(sharer)), "sharer_mask": sharer_mask,
                            "next": next_pos}
            return with_cache(self.target.model, cache)

        return make

    @torch.no_grad()
    def step(self, cache: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Before a decoding step: the fused entries of its tokens (``ids``: ``b 1``) become ``cache``'s pending."""
        s = self.session
        if cache is not s.get("cache"):
            raise LatentBridgeError("kv_fusion: a decoding step on a cache this message did not make")
        self._twin(s["twin"], ids, mask, positions)
        model = self.source.model
        sharer_ids = torch.tensor([self.source.ids([int(i)]) for i in ids[:, 0].tolist()], device=model.device)
        s["sharer_mask"] = torch.cat([s["sharer_mask"], torch.ones_like(s["sharer_mask"][:, :1])], 1)
        model.model(input_ids=sharer_ids, attention_mask=s["sharer_mask"], position_ids=s["next"], use_cache=True,
                    **with_cache(model.model, s["sharer"]))
        s["next"] = s["next"] + 1
        entries = [(e.keys[:, :, -1:], e.values[:, :, -1:]) for e in s["sharer"].layers]
        cache.pending = self._fused(s["twin"], entries, 1, torch.ones_like(ids))


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``b heads t head_dim`` -> ``b t (heads head_dim)``."""
    return t.transpose(1, 2).flatten(2)


def _heads(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``b t (heads head_dim)`` -> ``b heads t head_dim``, shaped and typed as ``like``."""
    b, h, n, d = like.shape
    return t.reshape(b, n, h, d).transpose(1, 2).to(like.dtype)
