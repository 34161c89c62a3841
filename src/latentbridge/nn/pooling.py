"""Masked reductions over source tokens, shared by translators (padding never changes a result)."""

from __future__ import annotations

import torch

from latentbridge.api.shapes import check_shape


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: ``h: b t d``, ``mask: b t`` -> ``b d`` (zeros for an all-padding row)."""
    dims = check_shape(h, "b t d", what="masked_mean input")
    check_shape(mask, "b t", **dims, what="masked_mean mask")
    weights = mask.to(h.dtype)[..., None]
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def select_last_k(h: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``k`` real tokens of each row, in order: ``b t d`` -> (``b k d``, valid ``b k``).

    The end of the source prompt is where the question sits (a few-shot header comes first), so
    "the last k" is the rule, never the first k. Works for left or right padding. A row with fewer
    than ``k`` real tokens fills the leading slots with zeros and marks them invalid.
    """
    dims = check_shape(h, "b t d", what="select_last_k input")
    check_shape(mask, "b t", **dims, what="select_last_k mask")
    real = mask.bool()
    # rank from the end among real tokens: 1 for the last real token, 2 for the one before, ...
    rank_from_end = real.flip(-1).long().cumsum(-1).flip(-1)
    chosen = real & (rank_from_end <= k)
    slot = (k - rank_from_end).clamp(min=0, max=k - 1)
    out = h.new_zeros(dims["b"], k, dims["d"])
    valid = torch.zeros(dims["b"], k, dtype=torch.bool, device=h.device)
    b_idx, t_idx = chosen.nonzero(as_tuple=True)
    out[b_idx, slot[b_idx, t_idx]] = h[b_idx, t_idx]
    valid[b_idx, slot[b_idx, t_idx]] = True
    return out, valid
