"""Building the target's input from soft tokens and text: one path for training and generation.

Every row is a list of segments (:class:`Soft`, :class:`Text`). :func:`assemble` lays the rows out
left-padded as ``[pad][segments...]``, embeds the text, places the soft tokens, and builds the
attention mask, the position ids (from the mask: padding never counts) and the labels (``-100`` on
everything that is not a supervised answer token). Generation uses the same function with no answer
segment, so the target sees at test time exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .shapes import check_shape

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Soft:
    """The row's ``k`` soft tokens, in order, each taking one position."""


@dataclass(frozen=True)
class Text:
    """Target-tokenizer ids. ``supervised``: these are answer tokens (labels). ``add_soft``: the row's soft
    tokens are added residually onto these tokens' embeddings, spread by :func:`resample_weights`."""

    ids: Sequence[int]
    supervised: bool = False
    add_soft: bool = False
    soft_gain: float = 1.0  # multiplier of the soft tokens added onto these tokens


Segment = Soft | Text


@dataclass
class TargetInputs:
    """What the target model reads. All ``b L``, except ``inputs_embeds``: ``b L d``.

    ``soft_mask`` marks the positions the soft tokens occupy or are added onto."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    soft_mask: torch.Tensor | None = None

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        return {
            "inputs_embeds": self.inputs_embeds,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only real tokens: ``[0 0 1 1 1] -> [0 0 0 1 2]`` (padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def resample_weights(n: int, k: int) -> torch.Tensor:
    """An ``n x k`` matrix spreading ``k`` items evenly over ``n`` slots (rows sum to 1).

    Both sequences are laid on the unit interval: slot ``i`` covers ``[i/n, (i+1)/n)`` and item ``j``
    covers ``[j/k, (j+1)/k)``; the weight of item ``j`` in slot ``i`` is their overlap, normalised per
    slot. With ``n >= k`` each slot takes (mostly) one item; with ``n < k`` each slot averages
    several. Every item gets positive total weight, so all of them receive a gradient. Used by the
    ``adapter`` injection mode and by objectives that compare ``k`` soft tokens with a text of any length.
    """
    if n <= 0 or k <= 0:
        raise ValueError(f"resample_weights needs n > 0 and k > 0, got n={n}, k={k}")
    i = torch.arange(n, dtype=torch.float64)
    j = torch.arange(k, dtype=torch.float64)
    lo = torch.maximum((i / n)[:, None], (j / k)[None, :])
    hi = torch.minimum(((i + 1) / n)[:, None], ((j + 1) / k)[None, :])
    overlap = (hi - lo).clamp(min=0)
    return (overlap / overlap.sum(dim=1, keepdim=True)).float()


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
    if mix is not None and soft is not None:
        placed = torch.einsum("blk,bkd->bld", mix.to(device=soft.device, dtype=soft.dtype), soft).to(embeds.dtype)
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
