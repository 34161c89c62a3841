"""The source hidden-state cache: the frozen source's chosen layer, computed once per example.

The source is frozen and its prompts are fixed, so its hidden states are the same at every epoch
and in every run that shares the source model, the layer and the prompt settings. They are stored
as safetensors shards under ``<cache root>/source/<key>/``, one shard per group of ``GROUP``
consecutive examples of a split, read through memory maps. A shard is always computed whole, in the
same sub-batches, so an example's cached value never depends on which run or batch asked for it
first. The key hashes the source model (config, tokenizer, weights), the layer, the dtype, the task
and its prompt settings, and latentbridge's version: change any of them and a new cache is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latentbridge.api.task import Example
from latentbridge.io.digest import json_digest

GROUP = 64
SUB_BATCH = 16


class SourceCache:
    """Per-example source hidden states (``t_i d``, real tokens only) in shards of ``GROUP`` examples."""

    def __init__(
        self,
        root: Path,
        key: dict[str, Any],
        compute: Callable[[Sequence[Example]], list[torch.Tensor]],
        positions: Callable[[Example], tuple[str, int]],
        examples_of: Callable[[str], Sequence[Example]],
    ):
        """``compute`` returns each example's hidden states (real tokens); ``positions`` gives an
        example's split and index in it; ``examples_of`` lists a split in order."""
        self.dir = Path(root) / "source" / json_digest(key)
        self.key = key
        self.compute = compute
        self.positions = positions
        self.examples_of = examples_of
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

    def _fill(self, split: str, group: int) -> Path:
        path = self.shard_path(split, group)
        members = list(self.examples_of(split)[group * GROUP : (group + 1) * GROUP])
        tensors: dict[str, torch.Tensor] = {}
        for start in range(0, len(members), SUB_BATCH):
            chunk = members[start : start + SUB_BATCH]
            for example, h in zip(chunk, self.compute(chunk), strict=True):
                tensors[example.id] = h.detach().to("cpu").contiguous()
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        return path

    def _handle(self, path: Path) -> Any:
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def get(self, examples: Sequence[Example]) -> list[torch.Tensor]:
        """Each example's hidden states, computing (and storing) the shards that are missing."""
        out = []
        for example in examples:
            split, index = self.positions(example)
            path = self.shard_path(split, index // GROUP)
            if path.is_file():
                self.hits += 1
            else:
                self.misses += 1
                self._fill(split, index // GROUP)
            out.append(self._handle(path).get_tensor(example.id))
        return out
