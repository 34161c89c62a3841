"""Baseline outputs (source, target, relay), generated once per models, items and decoding, cached on disk.

Baselines do not change during training, so they are never regenerated at each evaluation. The cache
key holds the models' fingerprints and dtypes, the task and its prompt settings, a digest of what the
models read for these items, and the decoding settings; a cached entry whose key differs is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentbridge._version import __version__
from latentbridge.io.atomic import write_atomic
from latentbridge.io.caches import cache_root
from latentbridge.io.digest import json_digest


class BaselineCache:
    def __init__(self, key: dict[str, Any], enabled: bool = True, root: Path | None = None):
        self.key = key
        self.enabled = enabled
        self.path = (root or cache_root()) / "baselines" / f"{json_digest(key)}.json"

    def load(self) -> dict[str, list[str]]:
        if not (self.enabled and self.path.is_file()):
            return {}
        try:
            stored = json.loads(self.path.read_text())
            return stored["outputs"] if stored.get("key") == self.key else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            return {}

    def save(self, outputs: dict[str, list[str]]) -> None:
        if self.enabled:
            write_atomic(self.path, json.dumps({"key": self.key, "outputs": outputs}))


def baseline_key(bridge: Any, task: Any, items_digest: str, settings: Any) -> dict[str, Any]:
    return {
        "latentbridge": __version__,
        "source": bridge.source.fingerprint,
        "target": bridge.target.fingerprint,
        "dtypes": [str(bridge.source.dtype), str(bridge.target.dtype)],
        "task": task.name,
        "task_config": task.config.read_settings(),
        "items": items_digest,
        "decoding": {"max_new_tokens": settings.max_new_tokens, "stop": settings.stop, "greedy": True},
    }

