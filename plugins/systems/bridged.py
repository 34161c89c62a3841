"""The bridged system and its controls: the target reading the translator's message.

``bridged`` reads each item's own message. The controls keep the bridged layout and destroy what the
message says about *this* item: ``shuffled`` (another item's message, by a fixed derangement from the run's
seed), ``null`` (the message of the source reading the prompt without the question), and the two in
:mod:`latentbridge.plugins.systems.controls` that keep a message's statistics (``covgauss``, ``randomrot``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from latentbridge import System, hookimpl
from latentbridge.eval.controls import null_prompt


class Bridged(System):
    """The target reading the translator's message of each item's own source states."""

    name = "bridged"
    role = "bridged"
    default = always_recorded = True
    rank = 2

    def generate(self, ev: Any) -> list[str]:
        return ev.bridged_outputs("bridged", ev.own_message)

    def score(self, ev: Any) -> list[list[float]]:
        return ev.bridged_scores("bridged", ev.own_message)

    @torch.no_grad()
    def message_sizes(self, ev: Any, outputs: dict[str, Sequence[str] | None]) -> list[tuple[int, int]] | None:
        """Each item's message: :meth:`~latentbridge.api.messages.Message.nbytes` and ``ntokens``."""
        ev.bridge.translator.eval()
        sizes: list[tuple[int, int]] = []
        for chunk in ev.chunks():
            message = ev.own_message(chunk)
            sizes += list(zip(message.nbytes(), message.ntokens(), strict=True))
        return sizes


class Control(System):
    """A control: the bridged layout with a message that says nothing about this item (``message_for``)."""

    role = "control"

    def message_for(self, ev: Any) -> Any:
        raise NotImplementedError

    def runs(self, ev: Any) -> bool:
        return True

    def generate(self, ev: Any) -> list[str] | None:
        return ev.bridged_outputs(self.name, self.message_for(ev)) if self.runs(ev) else None

    def score(self, ev: Any) -> list[list[float]] | None:
        return ev.bridged_scores(self.name, self.message_for(ev)) if self.runs(ev) else None


class Shuffled(Control):
    """Control: each item reads another item's message (its source states and seed).

    The other item comes from a fixed derangement of the evaluated items, drawn from the run's seed."""

    name = "shuffled"
    default = always_recorded = True
    rank = 3

    def runs(self, ev: Any) -> bool:
        return ev.shuffle is not None  # fewer than two items: no other item to take from

    def message_for(self, ev: Any):
        def message(chunk: slice):
            others = ev.shuffle[chunk]
            return ev.message([ev.prompts[j] for j in others], [ev.items[j] for j in others], ev.seeds[others])

        return message

    def item_fields(self, ev: Any, index: int, outputs: dict[str, Sequence[str] | None]) -> dict[str, Any]:
        if ev.shuffle is None or outputs.get("shuffled") is None:
            return {}
        return {"shuffled_source_id": ev.items[ev.shuffle[index]].id}


class Null(Control):
    """Control: the message of the source reading the prompt with the question removed."""

    name = "null"
    default = always_recorded = True
    rank = 4

    def message_for(self, ev: Any):
        return lambda chunk: ev.message([null_prompt(p) for p in ev.prompts[chunk]], None, ev.seeds[chunk])


@hookimpl
def register_systems(register):
    for cls in (Bridged, Shuffled, Null):
        register(cls)
