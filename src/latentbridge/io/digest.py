"""Digests that key caches and records: of JSON data, and of what the models read for a list of items."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from latentbridge.api.task import Prompt


def json_digest(value: Any, length: int = 20) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def prompts_digest(ids: Sequence[str], prompts: Sequence[Prompt]) -> str:
    """A digest of what the models read for these items: a data file edited in place changes it."""
    h = hashlib.sha256()
    for item_id, prompt in zip(ids, prompts, strict=True):
        h.update(f"{len(item_id)}:{item_id}{len(prompt.text)}:{prompt.text}".encode())
        if prompt.source is not None:  # a context split: what the source reads too
            h.update(f"source{len(prompt.source.text)}:{prompt.source.text}".encode())
        if prompt.turns:  # a conversation's earlier turns, read before the prompt
            h.update(json.dumps(prompt.turns).encode())
    return h.hexdigest()[:20]
