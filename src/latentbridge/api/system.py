"""Evaluation systems: the columns of every table.

A system says, for the items of one evaluation, what the target (or the source) reads and what it
answers: the target alone, the source's written solution relayed as text, the bridged message, a control
built from another item's message, a skyline that reads everything. Built-ins and third-party systems
register the same way (``register_systems(register)``) and a recipe names them in ``eval.systems``;
their settings go in ``eval.system_config.<name>``.

A system implements :meth:`System.generate` (every item's greedy output), and where it can
:meth:`System.score` (multiple-choice items: each choice's log-likelihood after what it reads) and
:meth:`System.message_sizes` (what crosses from source to target, per item). Each receives the
evaluation's context, an object with these members (``latentbridge.eval.context.EvalContext``):

- ``items``, ``prompts``, ``seeds`` (``n`` int64), ``task``, ``bridge``, ``settings``, ``split``, ``seed``:
  the evaluated items, their prompts and per-item seeds, the run's task and bridge (``bridge.source``,
  ``bridge.target``, their encoders ``bridge.source_encoder`` / ``bridge.target_encoder``, the translator),
  the decoding settings;
- ``generate(model, build, what)``: greedy outputs for every item, ``build(chunk)`` giving the inputs of
  a chunk (a slice of the items) — batched, distributed and interruptible by the harness;
- ``generate_text(model, rows, what)``: the same for plain token rows;
- ``score(model, rows_for, what)`` and ``score_text(model, encoder, prompts, what)``: choice scores;
- ``message(prompts, examples, seeds)``: the translator's message for a chunk's prompts;
- ``own_message(chunk)``: the bridged message of a chunk of items (each from its own source states);
- ``bridged_outputs(what, message_for)`` / ``bridged_scores(what, message_for)``: the target reading each
  item's own text and the message ``message_for(chunk)`` gives;
- ``baseline(name)``: another baseline system's outputs (the relay reads the source's), generated once
  and cached;
- ``cached(entry, compute)``: a value kept in the evaluation's baseline cache (for a baseline system's
  intermediate products, such as a background the source wrote);
- ``timings``: the parts of the latency, seconds per part named by the ``what`` each generation or scoring
  call was given (``two_stage background``, ``two_stage``), and ``message`` (the source's read and the
  translator, inside the bridged system's own part); ``benchmarks/latency.py`` reports them per query.

``role`` says how a system is run: ``baseline`` (reads nothing trained: generated once per models,
items and decoding, cached on disk, never regenerated at an evaluation), ``bridged`` (the trained
channel) or ``control`` (built from the trained channel's messages to destroy their content; the summary
reports ``bridged`` against each control).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

# record fields every evaluation file has for each item: a system of one of these names would collide
RESERVED_NAMES = frozenset({"eval", "split", "index", "id", "question", "gold", "primary", "choices", "shuffled_source"})
ROLES = ("baseline", "bridged", "control")


@dataclass
class SystemConfig:
    """A system's settings (``eval.system_config.<name>``); the base has none."""


class System:
    """An evaluation system (see the module)."""

    name: ClassVar[str]
    Config: ClassVar[type] = SystemConfig
    role: ClassVar[str] = "baseline"
    # evaluated by every recipe that does not list eval.systems (built-ins only: an installed plugin never
    # changes what other runs evaluate)
    default: ClassVar[bool] = False
    # fields in every evaluation file, null where not run: the six systems files have held from the start
    always_recorded: ClassVar[bool] = False
    rank: ClassVar[int] = 1000  # column order in records and tables (built-ins: 0-99)

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def generate(self, ev: Any) -> list[str]:
        """Every evaluated item's output text, in item order."""
        raise NotImplementedError(f"system '{self.name}' does not implement generate")

    def score(self, ev: Any) -> list[list[float]] | None:
        """Multiple-choice items: each item's score of every choice (summed log-probability of its
        continuation after what the system reads). None: this system does not score choices."""
        return None

    def message_sizes(self, ev: Any, outputs: dict[str, Sequence[str] | None]) -> list[tuple[int, int]] | None:
        """Per item, the bytes and token positions of what crosses from source to target (None: nothing
        is measured). ``outputs``: every system's outputs at this evaluation."""
        return None

    def item_fields(self, ev: Any, index: int, outputs: dict[str, Sequence[str] | None]) -> dict[str, Any]:
        """Extra fields of item ``index``'s record (after every system's own fields)."""
        return {}

    def cache_entry(self) -> str:
        """Where a baseline's outputs are kept in the baseline cache: its name, and its settings when it
        has any (so that other settings never read these outputs)."""
        if not fields(self.config):
            return self.name
        settings = json.dumps(asdict(self.config), sort_keys=True, default=str)
        return f"{self.name}:{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def problems(self, pair: dict[str, Any]) -> list[str]:
        """Why this system cannot run for a recipe (checked by ``validate``, before any model loads):
        ``pair`` holds what is known then (``models``, ``task``, ``translator``, ``injection``, the
        recipe's sections). Each problem is one line; none: it can run."""
        return []
