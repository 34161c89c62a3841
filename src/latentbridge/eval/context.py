"""What an evaluation system builds on: the items, batched generation and scoring, messages, the cache.

:class:`EvalContext` holds one evaluation's items (a split's first ``n``), their prompts and per-item
seeds, and the services every system uses (:mod:`latentbridge.api.system` lists them): generation and
choice scoring in fixed batches (dealt out whole under torchrun, interruptible between batches), the
translator's messages, and the baseline cache (outputs of systems that read nothing trained, kept on disk
per models, items and decoding). The harness (:mod:`latentbridge.eval.harness`) runs the systems on it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentbridge.api.choices import MultipleChoiceTask
from latentbridge.api.messages import Message
from latentbridge.api.task import Example, Prompt, Task
from latentbridge.bridge.core import Bridge
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.models import FrozenModel
from latentbridge.eval.baselines import BaselineCache, baseline_key
from latentbridge.eval.choices import bridged_rows, score_rows, text_rows
from latentbridge.eval.controls import derangement
from latentbridge.io.digest import prompts_digest
from latentbridge.registry.host import get_registry
from latentbridge.runtime.distributed import gather_objects, is_main, rank, world_size
from latentbridge.runtime.precision import autocast


class Interrupted(Exception):
    """Raised between generation batches when the run was asked to stop (preemption)."""


Progress = Callable[[str, int, int], None]  # (what, items done in this call, items of `what` in all)
MessageFor = Callable[[slice], Message]


@dataclass
class EvalSettings:
    n: int
    batch_size: int
    max_new_tokens: int
    stop: list[str]
    systems: list[str]
    system_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval.system_config: settings by system

    @classmethod
    def from_config(cls, config: Any, split: str = "test") -> EvalSettings:
        """The settings of a recipe's ``eval`` section for ``split`` (``n`` items of test, ``dev_n`` of dev)."""
        n = config.dev_n if split == "dev" else config.n
        return cls(n=n, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                   stop=list(config.stop), systems=list(config.systems),
                   system_config={k: dict(v or {}) for k, v in (getattr(config, "system_config", None) or {}).items()})


def item_seed(item_id: str) -> int:
    """A stable 63-bit seed per evaluation item (the DiT's sampling noise)."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little") >> 1


class EvalContext:
    """One evaluation's items and the services systems use (see the module)."""

    def __init__(self, bridge: Bridge, task: Task, settings: EvalSettings, out_dir: Path, *, split: str = "test",
                 seed: int = 0, progress: Progress | None = None, use_cache: bool = True,
                 should_stop: Callable[[], bool] | None = None, autocast: bool = True):
        self.bridge = bridge
        self.task = task
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.split = split
        self.seed = seed
        self.progress = progress
        self.use_cache = use_cache
        self.should_stop = should_stop or (lambda: False)
        self.autocast = autocast
        self.items: list[Example] = task.examples(split)[: settings.n]
        self.prompts: list[Prompt] = [task.prompt(e) for e in self.items]
        self.seeds = torch.tensor([item_seed(e.id) for e in self.items], dtype=torch.long)
        self.shuffle = derangement(len(self.items), seed)  # shuffled: item i reads item shuffle[i]'s source
        self.choices = isinstance(task, MultipleChoiceTask)  # items scored by each choice's log-likelihood
        # the parts of each system's latency: seconds per batch-dealt part (``what``: "source", "two_stage
        # background", "bridged", ...) and "message" (the source read and the translator), summed over calls
        self.timings: dict[str, float] = {}
        self._stores: dict[str, tuple[BaselineCache, dict[str, Any]]] = {}

    # -- batches -------------------------------------------------------------------------------------

    def _deal(self, work: Callable[[slice], list[Any]], what: str) -> list[Any]:
        """``work(chunk)`` for every item, in fixed batches of ``batch_size`` consecutive items.

        Under torchrun the batches are dealt out whole, round-robin, and the results gathered: every
        item is computed exactly once, in the same batch as in a single process, so the files match."""
        n, chunks = len(self.items), self.chunks()
        world, me = world_size(), rank()
        mine: dict[int, list[Any]] = {}
        started = time.perf_counter()
        for round_start in range(0, len(chunks), world):
            if self.should_stop():  # collective: every process asks the same number of times
                raise Interrupted
            index = round_start + me
            if index >= len(chunks):
                continue
            chunk = chunks[index]
            mine[chunk.start] = work(chunk)
            if self.progress:
                self.progress(what, (chunk.stop - chunk.start) * world, n)
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - started
        merged: dict[int, list[Any]] = {}
        for part in gather_objects(mine):
            merged.update(part)
        return [result for start in sorted(merged) for result in merged[start]]

    def chunks(self) -> list[slice]:
        """The evaluation's batches, in order (one process: every one)."""
        n, size = len(self.items), self.settings.batch_size
        return [slice(s, min(s + size, n)) for s in range(0, n, size)]

    # -- generation and scoring ----------------------------------------------------------------------

    def generate(self, model: FrozenModel, build: Callable[[slice], Any], what: str,
                 max_new_tokens: int | None = None) -> list[str]:
        """Greedy outputs for every item; ``build(chunk)`` gives a chunk's ``TargetInputs``
        (``max_new_tokens``: another limit than the evaluation's)."""
        limit = max_new_tokens or self.settings.max_new_tokens

        def work(chunk: slice) -> list[str]:
            with autocast(model.device, model.dtype, self.autocast):
                outs = greedy_generate(
                    model.model, model.tokenizer, build(chunk), max_new_tokens=limit,
                    eos_ids=model.eos_ids(), stop=self.settings.stop,
                )
            return [o.text for o in outs]

        return self._deal(work, what)

    def generate_text(self, model: FrozenModel, rows: Sequence[Sequence[int]], what: str,
                      max_new_tokens: int | None = None) -> list[str]:
        """Greedy outputs of ``model`` reading each item's token row (plain text)."""
        return self.generate(model, lambda c: self.bridge.text_inputs(model, rows[c]), what, max_new_tokens)

    def score(self, model: FrozenModel, rows_for: Callable[[slice], Any], what: str) -> list[list[float]]:
        """Every item's choice scores (multiple-choice tasks): ``rows_for(chunk)`` gives the chunk's
        :data:`~latentbridge.eval.choices.RowsFor`."""
        def work(chunk: slice) -> list[list[float]]:
            counts = [len(e.choices) for e in self.items[chunk]]
            with autocast(model.device, model.dtype, self.autocast), torch.no_grad():
                return score_rows(model.model, rows_for(chunk), counts)

        return self._deal(work, f"{what} (choices)")

    def score_text(self, model: FrozenModel, encoder: Any, prompts: Sequence[Prompt], what: str) -> list[list[float]]:
        """Choice scores of ``model`` reading each item's ``prompts`` as text."""
        return self.score(model, lambda c: text_rows(model, encoder, self.task, prompts[c], self.items[c]), what)

    # -- messages ------------------------------------------------------------------------------------

    def message(self, prompts: Sequence[Prompt], examples: Sequence[Example] | None, seeds: torch.Tensor) -> Message:
        """The translator's message for the source reading ``prompts`` (``examples``: for the source
        cache, or None; ``seeds``: per row)."""
        started = time.perf_counter()
        message = self.bridge.message(prompts, seeds, examples=examples)
        self.timings["message"] = self.timings.get("message", 0.0) + time.perf_counter() - started
        return message

    def own_message(self, chunk: slice) -> Message:
        """The bridged message of a chunk of items: each from its own source states and seed."""
        return self.message(self.prompts[chunk], self.items[chunk], self.seeds[chunk])

    def bridged_outputs(self, what: str, message_for: MessageFor) -> list[str]:
        """The target reading each item's own text and the message ``message_for(chunk)``."""
        def build(chunk: slice):
            return self.bridge.bridged_inputs(message_for(chunk), self.prompts[chunk], with_answer=False)

        self.bridge.translator.eval()
        with torch.no_grad():
            return self.generate(self.bridge.target, build, what)

    def bridged_scores(self, what: str, message_for: MessageFor) -> list[list[float]]:
        """Choice scores of the target reading each item's own text and ``message_for(chunk)``."""
        def rows_for(chunk: slice):
            return bridged_rows(self.bridge, message_for(chunk), self.task, self.prompts[chunk], self.items[chunk])

        self.bridge.translator.eval()
        with torch.no_grad():
            return self.score(self.bridge.target, rows_for, what)

    # -- baselines: generated once, cached on disk ----------------------------------------------------

    def baseline_key(self) -> dict[str, Any]:
        return baseline_key(self.bridge, self.task, prompts_digest([e.id for e in self.items], self.prompts),
                            self.settings)

    def _store(self, kind: str) -> tuple[BaselineCache, dict[str, Any]]:
        if kind not in self._stores:
            key = self.baseline_key() if kind == "outputs" else {**self.baseline_key(), "scores": "choice log-likelihoods"}
            cache = BaselineCache(key, enabled=self.use_cache)
            self._stores[kind] = (cache, cache.load())
        return self._stores[kind]

    def cached(self, entry: str, compute: Callable[[], Any], kind: str = "outputs") -> Any:
        """``compute()``, once per models, items and decoding: kept in the baseline cache under ``entry``
        (``kind``: ``outputs`` or ``scores``, two files) and read back from there afterwards."""
        cache, stored = self._store(kind)
        if entry not in stored:
            stored[entry] = compute()
            if is_main():
                cache.save(stored)
        return stored[entry]

    def system(self, name: str) -> Any:
        """The system ``name`` with the recipe's settings for it (``eval.system_config``)."""
        registry = get_registry()
        cls = registry.get("system", name, "eval.systems").cls
        config = registry.config_for("system", name, self.settings.system_config.get(name), f"eval.system_config.{name}")
        return cls(config)

    def baseline(self, name: str) -> list[str]:
        """A baseline system's outputs (generated once, cached), whether or not it is reported."""
        system = self.system(name)
        return self.cached(system.cache_entry(), lambda: system.generate(self))
