"""The control systems: does the target read anything from the source about *this* item?

``shuffled``: the bridged system, its message computed from another item's source states, by a fixed
derangement of the evaluated items (from the run's seed): what the bridge gives when the source read
some other question. ``null``: the message computed from the source reading the prompt with the
question removed (the few-shot header and the cue only). ``bridged − shuffled``, with a paired test,
is the information-flow figure: a bridge whose ``bridged`` is no better than ``shuffled`` carries
nothing the target uses from the source's reading of this question.
"""

from __future__ import annotations

import random

from latentbridge.api.task import Prompt


def derangement(n: int, seed: int) -> list[int] | None:
    """A permutation of ``range(n)`` with no fixed point (Sattolo's algorithm: one cycle through
    every item), drawn from ``seed``; None when ``n < 2`` (no item has another to take from)."""
    if n < 2:
        return None
    order = list(range(n))
    rng = random.Random(f"shuffled:{seed}")
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never the element itself
        order[i], order[j] = order[j], order[i]
    return order


def null_prompt(prompt: Prompt) -> Prompt:
    """The prompt with this question removed: what the source reads for the ``null`` control."""
    return prompt.without_question()
