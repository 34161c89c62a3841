"""The source hidden-state cache: the frozen source's chosen layer, computed once per example.

The source is frozen and its prompts are fixed, so its hidden states are the same at every epoch
and in every run that shares the source model, the layer and the prompt settings. They are stored
as safetensors shards under ``<cache root>/source/<key>/``, one shard per group of ``GROUP``
consecutive examples of a split (``<split>-<group>.safetensors``), read through memory maps.

An entry is found by its split and a digest of the exact token ids the source reads for it, never
by the example's id: two examples with one id (in two splits, or with different text) never share
an entry, and an example whose prompt changed is never given the hidden states of the old one. A
shard is always computed whole, in the same sub-batches, so an example's cached value never depends
on which run or batch asked for it first. The folder's key hashes the source model (config,
tokenizer, weights), the layer, the dtype, the task, its prompt settings and every split's prompts,
and latentbridge's version: change any of them and a new folder is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latentbridge.api.task import Example, Prompt
from latentbridge.io.digest import json_digest

GROUP = 64
SUB_BATCH = 16
SPLITS = ("train", "dev", "test")  # the order in which an example held by two splits is looked up


def rows_digest(row: Sequence[int]) -> str:
    """The name of a cache entry: a digest of the token ids the source reads."""
    return hashlib.sha256(json.dumps([int(i) for i in row]).encode()).hexdigest()[:32]


class SourceCache:
    """Per-example source hidden states (``t_i d``, real tokens only) in shards of ``GROUP`` examples.

    ``splits`` lists each split's examples in order; ``prompt`` is an example's prompt; ``rows`` gives
    the token ids the source reads for prompts (what an entry's digest is taken of) and ``compute``
    their hidden states on those tokens. An example is placed by value (its id, text, answer and
    label): one held by two splits, identical in every field, has one prompt and is read from the
    first split of :data:`SPLITS` that holds it.
    """

    def __init__(
        self,
        root: Path,
        key: dict[str, Any],
        splits: Mapping[str, Sequence[Example]],
        prompt: Callable[[Example], Prompt],
        rows: Callable[[Sequence[Prompt]], list[list[int]]],
        compute: Callable[[Sequence[Prompt]], list[torch.Tensor]],
    ):
        self.dir = Path(root) / "source" / json_digest(key)
        self.key = key
        self.splits = splits
        self.prompt = prompt
        self.rows = rows
        self.compute = compute
        self._where: dict[Example, tuple[str, int]] | None = None
        self._digests: dict[tuple[str, int], str] = {}
        self._handles: dict[Path, Any] = {}
        self.hits = self.misses = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.is_file():
            tmp = meta.with_name(f"key.json.tmp{os.getpid()}")
            tmp.write_text(json.dumps(key, indent=1, sort_keys=True))
            tmp.replace(meta)

    def shard_path(self, split: str, group: int) -> Path:
        return self.dir / f"{split}-{group:06d}.safetensors"

    def position(self, example: Example) -> tuple[str, int] | None:
        """The split holding ``example`` and its index there (None: in no split)."""
        if self._where is None:
            order = [s for s in SPLITS if s in self.splits] + [s for s in self.splits if s not in SPLITS]
            self._where = {}
            for split in order:
                for index, e in enumerate(self.splits[split]):
                    self._where.setdefault(e, (split, index))
        return self._where.get(example)

    def entry(self, example: Example) -> tuple[str, str] | None:
        """The key of ``example``'s entry: its split and the digest of the token ids the source reads."""
        where = self.position(example)
        if where is None:
            return None
        if where not in self._digests:
            (row,) = self.rows([self.prompt(example)])
            self._digests[where] = rows_digest(row)
        return where[0], self._digests[where]

    def _fill(self, split: str, group: int) -> Path:
        path = self.shard_path(split, group)
        start = group * GROUP
        members = list(self.splits[split][start : start + GROUP])
        tensors: dict[str, torch.Tensor] = {}
        for offset in range(0, len(members), SUB_BATCH):
            prompts = [self.prompt(e) for e in members[offset : offset + SUB_BATCH]]
            digests = [rows_digest(r) for r in self.rows(prompts)]
            for i, (digest, h) in enumerate(zip(digests, self.compute(prompts), strict=True)):
                self._digests[(split, start + offset + i)] = digest
                tensors.setdefault(digest, h.detach().to("cpu").contiguous())  # equal rows: one entry
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        # one metadata key: safetensors writes several in a random order, and a shard must be reproducible
        about = json.dumps({"split": split, "group": group, "examples": len(members)}, sort_keys=True)
        save_file(tensors, str(tmp), metadata={"shard": about})
        self._handles.pop(path, None)
        tmp.replace(path)
        return path

    def _handle(self, path: Path) -> tuple[Any, frozenset[str]]:
        """The shard's open file and the names of its entries."""
        if path not in self._handles:
            handle = safe_open(str(path), framework="pt")
            self._handles[path] = (handle, frozenset(handle.keys()))
        return self._handles[path]

    def get(self, examples: Sequence[Example]) -> list[torch.Tensor]:
        """Each example's hidden states, computing (and storing) the shards that are missing.

        An example in no split is computed directly and not stored."""
        out = []
        for example in examples:
            where = self.position(example)
            if where is None:
                out.extend(self.compute([self.prompt(example)]))
                continue
            split, index = where
            path = self.shard_path(split, index // GROUP)
            if path.is_file():
                self.hits += 1
            else:
                self.misses += 1
                self._fill(split, index // GROUP)
            _, digest = self.entry(example)
            if digest not in self._handle(path)[1]:  # a shard written from other prompts: redo it
                self._fill(split, index // GROUP)
                _, digest = self.entry(example)
                if digest not in self._handle(path)[1]:
                    raise RuntimeError(f"source cache: {path} has no entry for {split} example {example.id!r}")
            out.append(self._handle(path)[0].get_tensor(digest))
        return out
