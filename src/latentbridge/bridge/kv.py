"""Laying out key/value messages: the target reads a cache before its text, in training and in generation.

A :class:`~latentbridge.api.messages.KVPrefix` puts ``k`` virtual tokens' keys and values, at every layer,
right after the target's special prefix (BOS), where the injection mode's ``Soft()`` segment stands:
``[bos][virtual k][pad][text]`` — the BOS and the virtual tokens are the cache, the text the input, its
positions counted from the mask. A :class:`~latentbridge.api.messages.KVFusion` fuses the target's own
cache of its prompt with the source's aligned cache: the target reads ``[pad][bos][prompt]`` without the
prompt's last token (no gradient, frozen), each layer's keys and values are fused by the translator's
fuser, and the input is the prompt's last token then the answer: ``[pad][bos][prompt[:-1]] | [pad][last]
[answer]`` — so the first answer token's logits already read the fused cache, and the answer's positions
are never fused. The cache reaches the model through transformers' cache objects (a fresh one per
forward pass), never by patching attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.api.messages import KVFusion, KVPrefix, KVShare
from latentbridge.api.segments import Segment, Soft, TargetInputs, Text
from latentbridge.bridge.hide import hidden_from
from latentbridge.bridge.layout import assemble, left_pad, positions_from_mask
from latentbridge.bridge.models import cache_of, with_cache
from latentbridge.errors import LatentBridgeError
from latentbridge.nn.rope import rope_tables, rotate


def cache_factory(model: Any, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], dict[str, Any]]:
    """Keyword arguments handing ``model`` a fresh cache that holds ``kv`` (the model appends to it): a plain
    cache, every slot of every layer kept (a sliding layer's window is the mask's business:
    :mod:`latentbridge.bridge.windows`)."""

    def make() -> dict[str, Any]:
        return with_cache(model, DynamicCache(ddp_cache_data=[(k, v) for k, v in kv]))

    return make


def _split_at_soft(row: Sequence[Segment]) -> tuple[list[int], list[Segment]]:
    """The plain text before the row's ``Soft()`` (the special prefix) and the segments after it."""
    at = [i for i, seg in enumerate(row) if isinstance(seg, Soft)]
    if len(at) != 1:
        raise LatentBridgeError("a kv_prefix message needs an injection mode with one Soft() segment "
                                "(soft_only, soft_plus_text)")
    before = row[: at[0]]
    if any(not isinstance(s, Text) or s.supervised or s.add_soft for s in before):
        raise LatentBridgeError("a kv_prefix message goes after plain text only (the special prefix)")
    return [i for s in before for i in s.ids], list(row[at[0] + 1 :])


@torch.no_grad()
def prefill(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The target's own keys and values of ``ids`` (left-padded), per layer."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True)
    return [(layer.keys, layer.values) for layer in cache_of(out).layers]


def _with_cache(target: Any, cache_kv, cache_mask: torch.Tensor, rows: Sequence[Sequence[Segment]]) -> TargetInputs:
    """The text ``rows`` read after a cache of ``cache_mask.shape[1]`` positions: positions from the mask."""
    text = assemble(rows, None, target.embed, target.pad_id)
    mask = torch.cat([cache_mask.to(text.attention_mask), text.attention_mask], 1)
    positions = positions_from_mask(mask)[:, cache_mask.shape[1]:]
    return TargetInputs(inputs_embeds=text.inputs_embeds, attention_mask=mask, position_ids=positions,
                        labels=text.labels, soft_mask=None, cache=cache_factory(target.model, cache_kv))


def kv_prefix_inputs(target: Any, message: KVPrefix, rows: Sequence[Sequence[Segment]],
                     lead: tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None = None) -> TargetInputs:
    """``[bos][virtual][pad][text]``: the special prefix's own cache, then the message's keys and values (a
    masked message's rows left-padded inside its block: ``[bos][pad][virtual]``); the layers not in
    ``message.layers`` do not see the virtual positions. ``lead``: the text before the message already run
    (its keys and values per layer, and their mask), as :meth:`Layouts.lead_cache` gives it."""
    split = [_split_at_soft(r) for r in rows]
    device = target.device
    b, k = len(rows), message.length
    prefixes = [p for p, _ in split]
    if lead is not None:
        own, pmask = lead
    elif any(prefixes):
        ids, pmask = left_pad(prefixes, target.pad_id, device)
        own = prefill(target.model, ids, pmask)
    else:
        own, pmask = None, torch.zeros(b, 0, dtype=torch.long, device=device)
    virtual = message.mask.to(device=device, dtype=pmask.dtype) if message.mask is not None else \
        torch.ones(b, k, dtype=pmask.dtype, device=device)
    cache_mask = torch.cat([pmask, virtual], 1)
    # un-rotated keys take the target's rotation at the positions they hold: counted on from the special
    # prefix over real positions (the padding of a shorter row never counts)
    at = positions_from_mask(cache_mask)[:, pmask.shape[1]:] if not message.rotated else None
    kv = []
    for layer, (vk, vv) in enumerate(zip(message.keys, message.values, strict=True)):
        if at is not None:
            cos, sin = rope_tables(target.model, layer, at, vk.to(device))
            vk = rotate(vk.to(device).float(), cos.float(), sin.float())
        # the cache in the target's own dtype (a bf16 target attends over bf16 keys)
        vk, vv = vk.to(device=device, dtype=target.dtype), vv.to(device=device, dtype=target.dtype)
        if own is not None:
            ok, ov = own[layer]
            vk, vv = torch.cat([ok, vk], 2), torch.cat([ov, vv], 2)
        kv.append((vk, vv))
    inputs = _with_cache(target, kv, cache_mask, [rest for _, rest in split])
    unread = [layer for layer in range(len(kv)) if layer not in set(message.read_by())]
    if unread:  # the layers that do not read the message do not see its positions
        inputs.patch = lambda model: hidden_from(model, unread, k, start=pmask.shape[1])
    return inputs


def kv_share_inputs(target: Any, message: KVShare, rows: Sequence[Sequence[Segment]]) -> TargetInputs:
    """``[pad][source's tokens] | [pad][bos][prompt][answer]``: the source's cache of what it read, at its
    own positions, then the target's text from position (source tokens) on. Every layer holds the source's
    positions; the layers not in ``message.shared`` do not see them (:func:`~latentbridge.bridge.hide.hidden_from`)."""
    if any(isinstance(seg, Soft) for row in rows for seg in row):
        raise LatentBridgeError("a kv_share message goes before the target's own text: the injection mode must "
                                "place no soft tokens (after_cache)")
    device = target.device
    kv = [(k.to(device=device, dtype=target.dtype), v.to(device=device, dtype=target.dtype))
          for k, v in zip(message.keys, message.values, strict=True)]
    inputs = _with_cache(target, kv, message.mask.to(device), rows)
    hidden = [layer for layer in range(len(kv)) if layer not in set(message.shared)]
    width = message.mask.shape[1]
    if hidden:
        inputs.patch = lambda model: hidden_from(model, hidden, width)
    return inputs


def align(receiver: Sequence[tuple[int, int]], source: Sequence[tuple[int, int]], same_text: bool) -> list[int]:
    """For each receiver token (its character span in the prompt), the source token it reads: the one
    holding the receiver token's last character (C2C's one-to-one alignment by re-encoding the text). A
    special token without text reads the source's first token; when the two read different texts (the
    controls), positions map proportionally."""
    n_r, n_s = len(receiver), len(source)
    if not same_text:
        return [min(n_s - 1, (i * n_s) // max(n_r, 1)) for i in range(n_r)]
    out, j = [], 0
    for a, b in receiver:
        if b <= a:  # a special token (BOS): no text
            out.append(0)
            continue
        last = b - 1
        while j < n_s - 1 and source[j][1] <= last:
            j += 1
        out.append(j)
    return out


def _split_fused(row: Sequence[Segment], length: int) -> tuple[list[int], list[Segment]]:
    """The first ``length`` tokens of plain text the target reads (its prefix and prompt: fused) and the
    segments after them (an unsupervised answer context, the answer)."""
    if any(isinstance(s, Soft) for s in row):
        raise LatentBridgeError("a kv_fusion message goes with an injection mode without a Soft() segment "
                                "(fused_prompt)")
    read: list[int] = []
    n = 0
    while n < len(row) and len(read) < length and isinstance(row[n], Text) and not row[n].supervised \
            and not row[n].add_soft:
        read += list(row[n].ids)
        n += 1
    return read, list(row[n:])


def kv_fusion_inputs(target: Any, encoder: Any, message: KVFusion, rows: Sequence[Sequence[Segment]],
                     texts: Sequence[Any], prompts: Sequence[Any], response: ResponseSource | None = None) -> TargetInputs:
    """``[pad][bos][prompt[:-1]]`` fused, then ``[pad][last prompt token][answer]``: see the module. With
    ``message.response`` (``response``: the sharer and its re-encoding of the receiver's tokens), the input's
    tokens are fused too, at every decoding step (:class:`ResponseFusion`)."""
    split = [_split_fused(r, len(t.prefix) + len(t.prompt)) for r, t in zip(rows, texts, strict=True)]
    reads = [r for r, _ in split]
    for read, text in zip(reads, texts, strict=True):
        if read != list(text.prefix) + list(text.prompt):
            raise LatentBridgeError("a kv_fusion message fuses the target's own prompt: the injection mode must "
                                    "read its special prefix and prompt first (fused_prompt)")
    answers = [rest for _, rest in split]
    device = target.device
    if any(len(r) < 2 for r in reads):
        raise LatentBridgeError("kv_fusion: a prompt of fewer than two tokens has nothing to fuse")
    ids, mask = left_pad([r[:-1] for r in reads], target.pad_id, device)
    own = prefill(target.model, ids, mask)
    index = torch.zeros(ids.shape, dtype=torch.long, device=device)
    textless = torch.zeros(ids.shape, dtype=torch.bool, device=device)  # special and template tokens
    for row, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
        spans = [(0, 0)] * len(text.prefix) + list(encoder.offsets(prompt))
        spans = spans[: len(reads[row]) - 1]
        chosen = align(spans, message.offsets[row], message.text[row] == prompt.text)
        real = int(message.mask[row].sum())
        start_src = message.mask.shape[1] - real  # the source rows are left-padded too
        index[row, ids.shape[1] - len(chosen):] = torch.tensor(chosen, device=device) + start_src
        textless[row, ids.shape[1] - len(chosen):] = torch.tensor([b <= a for a, b in spans], device=device)
    keep_own = textless[:, None, :, None] if not message.fuse_special else None
    kv = []
    for layer, (ok, ov) in enumerate(own):
        source_layer = message.layers[layer]
        if source_layer is None:
            kv.append((ok, ov))
            continue
        sk, sv = (message.keys[source_layer].to(device), message.values[source_layer].to(device))
        gather = index[:, None, :, None].expand(-1, sk.shape[1], -1, sk.shape[3])
        fused = message.fuse(layer, ok, ov, sk.gather(2, gather), sv.gather(2, gather))
        change = message.extra.get("delta_map")  # a control's change to the fused delta (KVFusion.with_deltas)
        if change is not None:
            fused = tuple(own + _heads(change(layer, which, _flat(new - own), mask), own)
                          for which, (own, new) in enumerate(zip((ok, ov), fused, strict=True)))
        if keep_own is not None:  # the receiver's special and template tokens keep their own cache
            fused = tuple(torch.where(keep_own, own, new) for own, new in zip((ok, ov), fused, strict=True))
        kv.append(fused)
    rows = [[Text([r[-1]]), *answer] for r, answer in zip(reads, answers, strict=True)]
    inputs = _with_cache(target, kv, mask, rows)
    if message.response is not None:
        if response is None:
            raise LatentBridgeError("kv_fusion: fusing the response needs the sharer (the bridge's layout)")
        fusion = ResponseFusion(target, response, message, own, mask)
        ids = [[i for seg in row for i in seg.ids] for row in rows]  # [last prompt token][answer], Text only
        first = fusion.first_block(ids, inputs.attention_mask[:, mask.shape[1]:], inputs.position_ids)
        inputs.cache = fusion.cache_factory(kv, first)
        inputs.step = fusion.step
    return inputs


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
