"""Building the target's input from segments: one path for training and generation.

Every row is a list of segments (:class:`~latentbridge.api.segments.Soft`, :class:`~latentbridge.api.segments.Text`).
:func:`assemble` lays the rows out left-padded as ``[pad][segments...]``, embeds the text, places the soft tokens,
and builds the attention mask, the position ids (from the mask: padding never counts) and the labels (``-100`` on
everything that is not a supervised answer token). Generation uses the same function with no answer segment, so the
target sees at test time exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from latentbridge.api.injection import InjectionMode, TargetText
from latentbridge.api.layout import left_pad, pad_hidden, positions_from_mask  # noqa: F401  (their home: public)
from latentbridge.api.segments import IGNORE_INDEX, Segment, Soft, TargetInputs, Text
from latentbridge.api.shapes import check_shape
from latentbridge.nn.resample import resample_weights


def assemble(
    rows: Sequence[Sequence[Segment]],
    soft: torch.Tensor | None,
    embed: Callable[[torch.Tensor], torch.Tensor],
    pad_id: int,
) -> TargetInputs:
    """Lay out ``rows`` left-padded; ``soft`` is ``b k d`` (or None when no row uses soft tokens).

    ``embed`` maps ``b L`` ids to ``b L d`` embeddings (the target's input embedding layer).
    """
    b = len(rows)
    k = 0
    if soft is not None:
        dims = check_shape(soft, "b k d", b=b, what="soft tokens")
        k = dims["k"]
    lengths = [sum(k if isinstance(s, Soft) else len(s.ids) for s in row) for row in rows]
    if any(n == 0 for n in lengths):
        raise ValueError("assemble: a row with no tokens")
    width = max(lengths)
    device = soft.device if soft is not None else None
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    replace = torch.zeros((b, width), dtype=torch.bool)  # positions that are a soft token
    mix = torch.zeros((b, width, k), dtype=torch.float32) if k else None  # soft weights per position
    for r, row in enumerate(rows):
        pos = width - lengths[r]
        mask[r, pos:] = 1
        for seg in row:
            if isinstance(seg, Soft):
                if mix is None:
                    raise ValueError("assemble: a Soft segment but no soft tokens were given")
                mix[r, pos + torch.arange(k), torch.arange(k)] = 1.0
                replace[r, pos : pos + k] = True
                pos += k
                continue
            n = len(seg.ids)
            if n == 0:
                continue
            ids[r, pos : pos + n] = torch.as_tensor(list(seg.ids), dtype=torch.long)
            if seg.supervised:
                labels[r, pos : pos + n] = ids[r, pos : pos + n]
            if seg.add_soft:
                if mix is None:
                    raise ValueError("assemble: an add_soft segment but no soft tokens were given")
                mix[r, pos : pos + n] = resample_weights(n, k) * seg.soft_gain
            pos += n
    ids, labels, mask, replace = (t.to(device) if device else t for t in (ids, labels, mask, replace))
    embeds = embed(ids)
    device = embeds.device  # everything the model reads sits where its input embeddings are
    labels, mask, replace = labels.to(device), mask.to(device), replace.to(device)
    if mix is not None and soft is not None:
        placed = torch.einsum("blk,bkd->bld", mix.to(device=soft.device, dtype=soft.dtype), soft)
        placed = placed.to(device=device, dtype=embeds.dtype)
        # soft positions take the soft token; text positions keep their embedding plus any added soft part
        embeds = torch.where(replace[..., None], placed, embeds + placed)
    soft_mask = mix.abs().sum(-1).gt(0).to(mask.device) if mix is not None else torch.zeros_like(mask, dtype=torch.bool)
    return TargetInputs(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        labels=labels,
        soft_mask=soft_mask,
    )


def split_cached(rows: Sequence[Sequence[Segment]]) -> tuple[list[list[int]], list[list[Segment]]] | None:
    """Each row's cached lead (the ids of the ``Text(cached=True)`` segments that open it) and the segments
    after it; None unless every row opens with a cached lead of at least one token."""
    leads, rests = [], []
    for row in rows:
        n = 0
        while n < len(row) and isinstance(row[n], Text) and row[n].cached:
            n += 1
        lead = [i for seg in row[:n] for i in seg.ids]
        if not lead or any(seg.supervised or seg.add_soft for seg in row[:n]):
            return None
        leads.append(lead)
        rests.append(list(row[n:]))
    return leads, rests


def inject(
    mode: InjectionMode,
    soft: torch.Tensor,
    texts: Sequence[TargetText],
    embed: Callable[[torch.Tensor], torch.Tensor],
    pad_id: int,
) -> TargetInputs:
    """One injection mode for every row: ``soft: b k d`` and ``b`` texts -> the target's inputs."""
    check_shape(soft, "b k d", b=len(texts), what=f"injection '{mode.name}' soft tokens")
    return assemble([mode.segments(t) for t in texts], soft, embed, pad_id)
