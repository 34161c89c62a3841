"""The pieces of one target row (:class:`Soft`, :class:`Text`) and what the target reads (:class:`TargetInputs`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

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
