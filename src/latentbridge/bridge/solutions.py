"""The source's own solutions (``source.view: generation``): generated once per prompt and decoding, cached.

With the ``generation`` view the translator reads the source's states over the prompt *and* the source's
own greedy solution: the latent counterpart of the text relay, which hands the target that solution as
text. The solution is written from the prompt alone (the gold answer is never read) and cut as the
relay cuts it: the worked steps up to, not including, the ``####`` line (``source.through_answer``
keeps that line). It is decoded as the evaluation decodes (``eval.max_new_tokens``, ``eval.stop``), so on
the test items it is the very solution the text relay hands over. Solutions are generated once per model, prompt and decoding settings and kept in a
JSON file under the cache folder; prompts seen for the first time (the ``null`` control's) are
generated on demand and kept in memory.

A prompt solved on demand (a new question at inference, each query of the latency benchmark) can hand
back, with its solution, the source's states computed while writing it (:meth:`SourceSolutions.solve`):
the bridge then reads them instead of a second source pass over prompt + solution.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge.api.segments import Text
from latentbridge.api.task import Prompt
from latentbridge.bridge.generation import DecodingInterrupted, greedy_generate
from latentbridge.bridge.layout import assemble
from latentbridge.io.atomic import write_atomic
from latentbridge.io.digest import json_digest


def relay_continuation(prompt: Prompt, source_output: str, through_answer: bool = False) -> str:
    """What follows the prompt in the text relay: the source's worked solution up to (not including)
    its ``####`` line (the whole output with ``through_answer``); the target gives the final answer."""
    reasoning = source_output.strip() if through_answer else source_output.split("####")[0].strip()
    return prompt.separator + reasoning + ("\n" if reasoning else "")


@dataclass
class SolvedStates:
    """What the source computed for one prompt while solving it: ``ids``, the tokens it read (the prompt's,
    then those of its solution it read before it stopped); per kept layer, ``hidden[layer]``: ``t d`` over
    them."""

    ids: list[int]
    hidden: dict[int, torch.Tensor]


SAVE_EVERY = 10.0  # seconds between saves while a long solving runs (and at its end, or when it is stopped)


class SolvingStopped(Exception):
    """A stop signal ended the solving: the solutions made so far are saved (``done`` of ``total``)."""

    def __init__(self, signal_name: str, done: int, total: int):
        super().__init__(f"{signal_name}: stopped after {done}/{total} solutions (saved)")
        self.signal_name, self.done, self.total = signal_name, done, total


class SourceSolutions:
    """Greedy solutions of the source for prompts, by a digest of the token ids it reads. ``should_stop``
    (a function giving a signal's name, or None) is asked before each batch and at every decoding step:
    when it names one, the batch is dropped, what was made is saved and :class:`SolvingStopped` raised."""

    def __init__(self, source: Any, encoder: Any, *, max_new_tokens: int, stop: Sequence[str], batch_size: int,
                 root: Path | None, log: Callable[[str], None] = lambda _: None):
        self.source, self.encoder = source, encoder
        self.max_new_tokens, self.stop, self.batch_size, self.log = max_new_tokens, list(stop), batch_size, log
        key = {"source": source.fingerprint, "dtype": str(source.dtype), "prefix": list(encoder.prefix),
               "chat": encoder.chat is not None, "max_new_tokens": max_new_tokens, "stop": self.stop, "greedy": True}
        self.path = root / "solutions" / f"{json_digest(key)}.json" if root is not None else None
        self.key = key
        self.known: dict[str, str] = self._load()
        # rows whose states were read from the source's generation, and rows that needed a second pass
        self.reused = self.second_passes = 0
        self.should_stop: Callable[[], str | None] = lambda: None
        self._saved_at = time.monotonic()

    def _load(self) -> dict[str, str]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            stored = json.loads(self.path.read_text())
            return dict(stored["solutions"]) if stored.get("key") == self.key else {}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return {}

    def _digest(self, prompt: Prompt) -> str:
        return hashlib.sha256(json.dumps(self.encoder.prompt_ids(prompt)).encode()).hexdigest()[:24]

    def is_known(self, prompts: Sequence[Prompt]) -> bool:
        """Whether every prompt's solution is known already (cached or generated before)."""
        return all(self._digest(p.for_source) in self.known for p in prompts)

    def get(self, prompts: Sequence[Prompt], save: bool = False) -> list[str]:
        """Each prompt's solution, generating the missing ones in batches (saved to disk with ``save``). The
        source reads :attr:`Prompt.for_source` (a context split's context and question)."""
        return self.solve(prompts, save=save)[0]

    def solve(self, prompts: Sequence[Prompt], save: bool = False,
              keep: Sequence[int] | None = None) -> tuple[list[str], dict[str, SolvedStates]]:
        """:meth:`get`, and with ``keep`` (layers, as indices into ``hidden_states``), by digest
        (:meth:`digest`), those layers' states the source computed while writing each solution generated by
        this call (none for those known before)."""
        prompts = [p.for_source for p in prompts]
        digests = [self._digest(p) for p in prompts]
        missing = list(dict.fromkeys(d for d in digests if d not in self.known))
        states: dict[str, SolvedStates] = {}
        if missing:
            by_digest = {d: p for d, p in zip(digests, prompts, strict=True)}
            todo = [by_digest[d] for d in missing]
            progress = _Progress(len(todo), self.log) if len(todo) > self.batch_size else None
            if progress is not None:
                self.log(f"source view 'generation': the source solves {len(todo)} prompts (once, then cached; "
                         "saved as they are made)")
            for start in range(0, len(todo), self.batch_size):
                stop = self.should_stop()
                if stop is not None:
                    self._save(save)
                    raise SolvingStopped(stop, start, len(todo))
                chunk = todo[start : start + self.batch_size]
                names = missing[start : start + self.batch_size]
                rows = [self.encoder.prompt_ids(p) for p in chunk]
                inputs = assemble([[Text(r)] for r in rows], None, self.source.embed, self.source.pad_id)
                try:
                    made = greedy_generate(self.source.model, self.source.tokenizer, inputs, keep=keep,
                                           max_new_tokens=self.max_new_tokens, eos_ids=self.source.eos_ids(),
                                           stop=self.stop, interrupt=lambda: self.should_stop() is not None)
                except DecodingInterrupted:
                    self._save(save)
                    raise SolvingStopped(self.should_stop() or "SIGTERM", start, len(todo)) from None
                outs, kept = made if keep is not None else (made, None)
                for r, (d, out) in enumerate(zip(names, outs, strict=True)):
                    self.known[d] = out.text
                    if kept is not None:
                        at = kept.positions(r, kept.read[r])
                        states[d] = SolvedStates(ids=rows[r] + out.token_ids[: kept.read[r]],
                                                 hidden={i: h[r, at] for i, h in kept.hidden.items()})
                if progress is not None:
                    if time.monotonic() - self._saved_at >= SAVE_EVERY:  # a stopped run keeps what it made
                        self._save(save)
                    progress.update(start + len(chunk))
            self._save(save)
        return [self.known[d] for d in digests], states

    def _save(self, save: bool) -> None:
        """Write what is known, merged with what another process (a parallel sweep's cell) saved meanwhile."""
        self._saved_at = time.monotonic()
        if save and self.path is not None:
            self.known = {**self._load(), **self.known}
            write_atomic(self.path, json.dumps({"key": self.key, "solutions": self.known}))

    def digest(self, prompt: Prompt) -> str:
        """The key of ``prompt``'s solution (a digest of the token ids the source reads)."""
        return self._digest(prompt.for_source)


class _Progress:
    """Progress lines of a long solving: done/total, the rate and an estimate of the time left, about every
    ten seconds (and at the end)."""

    def __init__(self, total: int, log: Callable[[str], None], every: float = 10.0):
        self.total, self.log, self.every = total, log, every
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("inf")
        self.log(f"source view 'generation': {done}/{self.total} solutions, {rate:.1f}/s"
                 + (f", about {_duration(left)} left" if done < self.total else f", done in {_duration(now - self.start)}"))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
