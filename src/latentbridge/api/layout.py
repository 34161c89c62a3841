"""Layout helpers a plugin's message kind may use (public): left padding and positions counted over real
tokens, the convention of every layout in latentbridge. The layouts of the built-in message kinds are on
``bridge.layout`` (:class:`latentbridge.api.messages.Layouts`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only real tokens: ``[0 0 1 1 1] -> [0 0 0 1 2]`` (padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> left-padded ``b L`` ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def pad_hidden(rows: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example hidden states (``t_i d``) -> left-padded ``b t d`` (zeros) and mask ``b t``."""
    width = max(r.shape[0] for r in rows)
    h = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        h[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return h.to(device), mask.to(device)
