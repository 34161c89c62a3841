"""The source's own solutions (``source.view: generation``): generated once per prompt and decoding, cached.

With the ``generation`` view the translator reads the source's states over the prompt *and* the source's
own greedy solution: the latent counterpart of the text relay, which hands the target that solution as
text. The solution is written from the prompt alone (the gold answer is never read) and cut as the
relay cuts it: the worked steps up to, not including, the ``####`` line (``source.through_answer``
keeps that line). It is decoded as the evaluation decodes (``eval.max_new_tokens``, ``eval.stop``), so on
the test items it is the very solution the text relay hands over. Solutions are generated once per model, prompt and decoding settings and kept in a
JSON file under the cache folder; prompts seen for the first time (the ``null`` control's) are
generated on demand and kept in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentbridge.api.segments import Text
from latentbridge.api.task import Prompt
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.layout import assemble
from latentbridge.io.atomic import write_atomic
from latentbridge.io.digest import json_digest


def relay_continuation(prompt: Prompt, source_output: str, through_answer: bool = False) -> str:
    """What follows the prompt in the text relay: the source's worked solution up to (not including)
    its ``####`` line (the whole output with ``through_answer``); the target gives the final answer."""
    reasoning = source_output.strip() if through_answer else source_output.split("####")[0].strip()
    return prompt.separator + reasoning + ("\n" if reasoning else "")


class SourceSolutions:
    """Greedy solutions of the source for prompts, by a digest of the token ids it reads."""

    def __init__(self, source: Any, encoder: Any, *, max_new_tokens: int, stop: Sequence[str], batch_size: int,
                 root: Path | None, log: Callable[[str], None] = lambda _: None):
        self.source, self.encoder = source, encoder
        self.max_new_tokens, self.stop, self.batch_size, self.log = max_new_tokens, list(stop), batch_size, log
        key = {"source": source.fingerprint, "dtype": str(source.dtype), "prefix": list(encoder.prefix),
               "chat": encoder.chat is not None, "max_new_tokens": max_new_tokens, "stop": self.stop, "greedy": True}
        self.path = root / "solutions" / f"{json_digest(key)}.json" if root is not None else None
        self.key = key
        self.known: dict[str, str] = self._load()

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

    def get(self, prompts: Sequence[Prompt], save: bool = False) -> list[str]:
        """Each prompt's solution, generating the missing ones in batches (saved to disk with ``save``). The
        source reads :attr:`Prompt.for_source` (a context split's context and question)."""
        prompts = [p.for_source for p in prompts]
        digests = [self._digest(p) for p in prompts]
        missing = list(dict.fromkeys(d for d in digests if d not in self.known))
        if missing:
            by_digest = {d: p for d, p in zip(digests, prompts, strict=True)}
            todo = [by_digest[d] for d in missing]
            if len(todo) > self.batch_size:
                self.log(f"source view 'generation': the source solves {len(todo)} prompts (once, then cached)")
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                rows = [self.encoder.prompt_ids(p) for p in chunk]
                inputs = assemble([[Text(r)] for r in rows], None, self.source.embed, self.source.pad_id)
                outs = greedy_generate(self.source.model, self.source.tokenizer, inputs,
                                       max_new_tokens=self.max_new_tokens, eos_ids=self.source.eos_ids(), stop=self.stop)
                for d, out in zip(missing[start : start + self.batch_size], outs, strict=True):
                    self.known[d] = out.text
                done = start + len(chunk)
                if len(todo) > self.batch_size and (done // self.batch_size) % 25 == 0:
                    self.log(f"source view 'generation': {done}/{len(todo)} solutions")
            if save and self.path is not None:
                write_atomic(self.path, json.dumps({"key": self.key, "solutions": self.known}))
        return [self.known[d] for d in digests]
