"""Writing files so that a crash never leaves half a file: one synced writer, temporary file and rename.

:func:`write_synced` is the one place bytes reach the disk with an fsync; :func:`write_atomic` writes
through a temporary file beside the target and renames it into place, so a reader sees the old file
or the new one, never a part. JSON goes out without NaN (non-finite floats become null).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller renames it into place if it must be atomic)."""
    with Path(path).open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically: a synced temporary file renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    write_synced(tmp, data.encode("utf-8") if isinstance(data, str) else data)
    tmp.replace(path)


def fsync_path(path: Path) -> None:
    """fsync a file or folder that is already written (a folder: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """JSON-safe values: non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """One line of JSON (UTF-8 kept, no NaN)."""
    return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False)


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(json_safe(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl_atomic(path: Path, records: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def append_jsonl(path: Path, value: dict[str, Any]) -> None:
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(dumps(value) + "\n")
        handle.flush()


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LatentBridgeError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise LatentBridgeError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
