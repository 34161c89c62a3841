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
from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.api.messages import KVFusion, KVPrefix, KVShare
from latentbridge.api.segments import Segment, Soft, TargetInputs, Text
from latentbridge.bridge.hide import hidden_from
from latentbridge.bridge.layout import assemble, left_pad, positions_from_mask
from latentbridge.bridge.models import cache_of, with_cache
from latentbridge.bridge.response import ResponseFusion, ResponseSource, _flat, _heads
from latentbridge.bridge.retokenize import aligned_positions, fused_end
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
def prefill(model: Any, ids: torch.Tensor, mask: torch.Tensor,
            positions: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The target's own keys and values of ``ids`` (left-padded; at ``positions``, else counted from the mask),
    per layer."""
    positions = positions_from_mask(mask) if positions is None else positions
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache_of(out).layers]


def _with_cache(target: Any, cache_kv, cache_mask: torch.Tensor, rows: Sequence[Sequence[Segment]],
                placed: Sequence[Sequence[int]] | None = None) -> TargetInputs:
    """The text ``rows`` read after a cache of ``cache_mask.shape[1]`` positions: positions from the mask, or
    ``placed`` (per row, its tokens' positions)."""
    text = assemble(rows, None, target.embed, target.pad_id)
    mask = torch.cat([cache_mask.to(text.attention_mask), text.attention_mask], 1)
    positions = positions_from_mask(mask)[:, cache_mask.shape[1]:] if placed is None else \
        left_pad(placed, 0, mask.device)[0]
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
    tokens are fused too, at every decoding step (:class:`ResponseFusion`). Under chat sections
    (``message.sections``) the fused part ends with the user's message (:func:`fused_end`): the template's
    closing and the cue are the input, at the positions of the padded sequence, and the answer starts after it."""
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
    if message.response is not None and message.sections is not None:  # validate refuses sections; auto gets here
        raise LatentBridgeError("kv_fusion: include_response with chat templates aligned by sections (the two "
                                "tokenizers differ) is not supported yet; set translator.chat_alignment=reencode")
    flags = [encoder.message_flags(p) for p in prompts] if message.sections is not None else None
    cuts = [fused_end(f) for f in flags] if flags is not None else [len(r) - 1 for r in reads]
    ids, mask = left_pad([r[:c] for r, c in zip(reads, cuts, strict=True)], target.pad_id, device)
    placed = None
    if flags is not None:  # the chat sections' alignment: positions that count the padding
        index, textless, placed = _by_sections(message, prompts, flags, cuts, ids.shape[1])
        own = prefill(target.model, ids, mask, left_pad([p[:c] for (p, _), c in zip(placed, cuts, strict=True)],
                                                        0, device)[0])
    else:
        if message.fuse_special and not message.one_to_one and any(getattr(p, "turns", ()) for p in prompts):
            raise LatentBridgeError("kv_fusion: a prompt with earlier chat turns (lm-eval's --system_instruction, "
                                    "--fewshot_as_multiturn) has no text to align them by with alignment: "
                                    "last_character; use alignment: retokenize")
        own = prefill(target.model, ids, mask)
        index, textless = _by_character(encoder, message, prompts, texts, reads, ids.shape[1])
    keep_own = textless[:, None, :, None] if not message.fuse_special or placed is not None else None
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
    rows = [[Text(r[c:]), *answer] for r, c, answer in zip(reads, cuts, answers, strict=True)]
    if placed is None:
        inputs = _with_cache(target, kv, mask, rows)
    else:  # the rest of the prompt at its places; what follows (the answer, generation) after the padded sequence
        spots, nexts = [], []
        for (positions, end), c, answer in zip(placed, cuts, answers, strict=True):
            spots.append([*positions[c:], *range(end, end + sum(len(seg.ids) for seg in answer))])
            nexts.append(max(spots[-1][-1] + 1, end))
        inputs = _with_cache(target, kv, mask, rows, spots)
        inputs.next_position = torch.tensor(nexts, device=device)[:, None]
    if message.response is not None:
        if response is None:
            raise LatentBridgeError("kv_fusion: fusing the response needs the sharer (the bridge's layout)")
        fusion = ResponseFusion(target, response, message, own, mask)
        ids = [[i for seg in row for i in seg.ids] for row in rows]  # [last prompt token][answer], Text only
        first = fusion.first_block(ids, inputs.attention_mask[:, mask.shape[1]:], inputs.position_ids)
        inputs.cache = fusion.cache_factory(kv, first)
        inputs.step = fusion.step
    return inputs


def _by_character(encoder: Any, message: KVFusion, prompts: Sequence[Any], texts: Sequence[Any],
                  reads: Sequence[Sequence[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fused slot of the target's prompt, the source slot it reads (:func:`align`; the same slot where the
    source read the target's tokens one for one, ``message.one_to_one``), and whether it is a special or
    template token (no text in the prompt: BOS, a chat template's markup, a cue after the template)."""
    device = message.mask.device
    index = torch.zeros(len(reads), width, dtype=torch.long)
    textless = torch.zeros(len(reads), width, dtype=torch.bool)
    for row, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
        spans = [(0, 0)] * len(text.prefix) + list(encoder.offsets(prompt))
        spans = spans[: len(reads[row]) - 1]
        # the source read this prompt (not another's, as the controls'); one for one, its very tokens
        same = message.text[row] == prompt.text and (not message.one_to_one
                                                     or int(message.mask[row].sum()) == len(reads[row]))
        chosen = list(range(len(spans))) if message.one_to_one and same else align(spans, message.offsets[row], same)
        start_src = message.mask.shape[1] - int(message.mask[row].sum())  # the source rows are left-padded too
        index[row, width - len(chosen):] = torch.tensor(chosen) + start_src
        textless[row, width - len(chosen):] = torch.tensor([b <= a for a, b in spans], dtype=torch.bool)
    return index.to(device), textless.to(device)


def _by_sections(message: KVFusion, prompts: Sequence[Any], flags: Sequence[Sequence[bool]], cuts: Sequence[int],
                 width: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[list[int], int]]]:
    """The chat sections' alignment (:class:`latentbridge.bridge.retokenize.Sections`): per fused slot of the
    target's prompt (each row's first ``cuts[row]`` tokens, left-padded to ``width``), the source slot it reads
    and whether it is a template token (kept as the target's own); per row, its tokens' positions in the padded
    sequence and that sequence's length. A message token reads its own re-encoding; for a source that read
    another prompt (the controls), the message tokens spread over that prompt's in order."""
    index = torch.zeros(len(prompts), width, dtype=torch.long)
    template = torch.ones(len(prompts), width, dtype=torch.bool)
    placed = []
    for row, prompt in enumerate(prompts):
        sections = message.sections[row]
        placed.append(aligned_positions(flags[row], sections.template))
        received = [i for i in range(cuts[row]) if flags[row][i]]
        slots = sections.message_slots
        if message.text[row] == prompt.text and len(slots) == sum(flags[row]):  # this very prompt, its turns too
            chosen = slots[: len(received)]
        else:
            n = max(sum(flags[row]), 1)
            chosen = [slots[min(len(slots) - 1, m * len(slots) // n)] for m in range(len(received))] if slots else []
        start_src = message.mask.shape[1] - int(message.mask[row].sum())
        column = width - cuts[row]
        for at, slot in zip(received, chosen, strict=False):
            index[row, column + at] = start_src + slot
            template[row, column + at] = False
    device = message.mask.device
    return index.to(device), template.to(device), placed
