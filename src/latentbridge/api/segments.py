"""The pieces of one target row (:class:`Soft`, :class:`Text`) and what the target reads (:class:`TargetInputs`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Soft:
    """The row's ``k`` soft tokens, in order, each taking one position."""


@dataclass(frozen=True)
class Text:
    """Target-tokenizer ids. ``supervised``: these are answer tokens (labels). ``add_soft``: the row's soft
    tokens are added residually onto these tokens' embeddings, spread by :func:`resample_weights`.
    ``cached``: plain text that opens the row, before its soft tokens, which nothing in the row changes (a
    few-shot header): the target reads it once, without gradient, and the rest of the row after its
    key/value cache (run once per batch when every row opens with the same ids). Laid out as text by
    :func:`~latentbridge.bridge.layout.assemble`: the same positions, the same result."""

    ids: Sequence[int]
    supervised: bool = False
    add_soft: bool = False
    soft_gain: float = 1.0  # multiplier of the soft tokens added onto these tokens
    cached: bool = False


Segment = Soft | Text


@dataclass
class TargetInputs:
    """What the target model reads. All ``b L``, except ``inputs_embeds``: ``b L d``.

    ``soft_mask`` marks the positions the soft tokens occupy or are added onto. ``cache``: for a key/value
    message, a function giving the model a fresh cache that the input follows (then ``attention_mask``
    covers the cache's positions and the input's, ``position_ids`` the input's only). ``patch``: for a
    message that acts inside the model (an activation written into the residual stream; cache positions
    that some layers must not see), a function of the model giving a context manager around every pass
    over these inputs and the decoding that continues them (:meth:`patched`, :meth:`forward`). ``step``: for a
    message that changes what each new token writes to the cache (c2c's ``include_response``), called before
    every decoding step with the cache, the step's token ids (``b 1``), the attention mask and the positions.
    ``next_position``: ``b 1``, where the first token generated after these inputs goes (None: after the
    input's last position; a layout whose prompt ends in positions it leaves empty sets it: c2c's chat
    sections)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    soft_mask: torch.Tensor | None = None
    cache: Callable[[], dict[str, Any]] | None = None
    patch: Callable[[Any], AbstractContextManager[Any]] | None = None
    step: Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
    next_position: torch.Tensor | None = None

    def first_new_position(self) -> torch.Tensor:
        """``b 1``: the position of the first token generated after these inputs."""
        return self.next_position if self.next_position is not None else self.position_ids[:, -1:] + 1

    def model_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "inputs_embeds": self.inputs_embeds,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }
        if self.cache is not None:
            kwargs.update(self.cache())
        return kwargs

    def patched(self, model: Any) -> AbstractContextManager[Any]:
        """The context these inputs are read in: the message's patch, or nothing."""
        return self.patch(model) if self.patch is not None else nullcontext()

    def forward(self, model: Any, **kwargs: Any) -> Any:
        """One pass of ``model`` over these inputs (their cache and patch, when they have them), with ``kwargs``."""
        with self.patched(model):
            return model(**self.model_kwargs(), **kwargs)
