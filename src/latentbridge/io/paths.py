"""Paths a user types: ``~`` expanded, and a name the file system refuses reported in one line."""

from __future__ import annotations

import os
from pathlib import Path

from latentbridge.errors import LatentBridgeError


def user_path(text: str | os.PathLike, what: str = "path") -> Path:
    """``text`` as a path with ``~`` / ``~user`` expanded; an unknown user is a clear error."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~no_such_user
        raise LatentBridgeError(f"{what} '{text}': cannot expand '~' (no such user or no home folder)") from None


def kind_of(path: Path, what: str = "path") -> str | None:
    """``"file"``, ``"dir"``, another kind (``"other"``), or None when nothing is there; a path the file
    system refuses (a name too long, a loop of links) is a clear error instead of a traceback."""
    try:
        if path.is_file():
            return "file"
        if path.is_dir():
            return "dir"
        return "other" if path.exists() else None
    except OSError as exc:
        raise LatentBridgeError(f"{what} '{path}': {exc.strerror or type(exc).__name__}") from None
