"""The target's cached lead: the text that opens every row before the message (a few-shot header), read once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from latentbridge.api.segments import TargetInputs
from latentbridge.bridge.kv import cache_factory, prefill
from latentbridge.bridge.layout import assemble, left_pad, positions_from_mask
from latentbridge.bridge.prefix import PrefixState


class LeadCache:
    """Runs the target over each row's lead (``Text(cached=True)``) without gradient; a lead every row of a
    batch shares is run once and kept for the next batches (the last one only: a header changes rarely),
    keyed by the model, its dtype and device and the lead's ids."""

    def __init__(self) -> None:
        self.kept: dict[tuple[Any, ...], PrefixState] = {}

    def kv(self, target: Any, leads: Sequence[Sequence[int]]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """The target's keys and values of each row's lead, per layer, and their mask (``b P``, left-padded)."""
        b = len(leads)
        if all(list(lead) == list(leads[0]) for lead in leads):
            ids = tuple(leads[0])
            key = (id(target.model), target.dtype, str(target.device), ids)
            state = self.kept.get(key)
            if state is None:
                with torch.no_grad():
                    state = PrefixState.compute(target.model, ids, None, target.device)
                self.kept = {key: state}
            kv = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in state.kv]
            return kv, torch.ones(b, len(ids), dtype=torch.long, device=target.device)
        ids, mask = left_pad(leads, target.pad_id, target.device)
        return prefill(target.model, ids, mask), mask

    def after(self, target: Any, leads: Sequence[Sequence[int]], rows: Sequence[Sequence[Any]],
              soft: torch.Tensor | None = None) -> TargetInputs:
        """``[lead][pad][rows]`` (leads of different lengths: ``[pad][lead][pad][rows]``): ``rows`` (left-padded,
        ``soft`` at their ``Soft()``, moved to the target) after the leads' key/value cache, at the positions
        the whole rows would have."""
        kv, lead_mask = self.kv(target, leads)
        if soft is not None:
            soft = soft.to(device=target.device, dtype=target.dtype)
        text = assemble(rows, soft, target.embed, target.pad_id)
        mask = torch.cat([lead_mask.to(text.attention_mask), text.attention_mask], 1)
        return TargetInputs(inputs_embeds=text.inputs_embeds, attention_mask=mask,
                            position_ids=positions_from_mask(mask)[:, lead_mask.shape[1]:], labels=text.labels,
                            soft_mask=text.soft_mask, cache=cache_factory(target.model, kv))
