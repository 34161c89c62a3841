"""The on-disk caches (source hidden states, baseline outputs): where they live, what they hold, clearing them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def cache_entries(root: Path) -> list[dict[str, Any]]:
    """What ``latentbridge cache info`` shows: one row per cache folder."""
    rows = []
    for kind in ("source", "baselines"):
        base = Path(root) / kind
        if not base.is_dir():
            continue
        if kind == "baselines":
            files = list(base.glob("*.json"))
            if files:
                rows.append({"kind": kind, "key": "-", "entries": len(files), "bytes": sum(f.stat().st_size for f in files),
                             "what": "generated baseline outputs"})
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            shards = list(folder.glob("*.safetensors"))
            key = json.loads((folder / "key.json").read_text()) if (folder / "key.json").is_file() else {}
            what = f"{key.get('source', {}).get('name', '?')} layer {key.get('layer', '?')} ({key.get('task', '?')})"
            rows.append({"kind": kind, "key": folder.name, "entries": len(shards),
                         "bytes": sum(f.stat().st_size for f in shards), "what": what})
    return rows


def clear_cache(root: Path, kind: str | None = None) -> int:
    """Delete the cache (or one kind of it); returns the bytes freed."""
    freed = 0
    for name in ("source", "baselines"):
        if kind not in (None, name):
            continue
        base = Path(root) / name
        if base.is_dir():
            freed += sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
            shutil.rmtree(base)
    return freed


def cache_root() -> Path:
    return Path(os.environ.get("LATENTBRIDGE_CACHE_DIR", Path.home() / ".cache" / "latentbridge"))
