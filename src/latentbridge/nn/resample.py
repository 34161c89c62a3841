"""Spreading ``k`` items over ``n`` slots: how ``k`` soft tokens meet a text of any length."""

from __future__ import annotations

import torch


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
