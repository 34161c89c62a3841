"""Command-line overrides of a recipe: ``key.path=value`` (read as YAML) and ``~key.path`` to delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from latentbridge.errors import LatentBridgeError

# -- overrides -------------------------------------------------------------------------------------


# what PyYAML raises besides YAMLError for input it cannot build a value from (impossible dates, bad
# explicit tags, integers with more digits than Python allows, nesting deeper than the recursion limit)
YAML_VALUE_ERRORS = (ValueError, KeyError, IndexError, AttributeError, TypeError, RecursionError)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key.path=value`` sets (value parsed as YAML, creating mappings on the way); ``~key.path`` deletes."""
    for item in overrides:
        if item.startswith("~"):
            if not item[1:].strip():
                raise LatentBridgeError(f"override {item!r}: expected ~key.path (the key to delete)")
            _delete(data, item[1:], item)
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LatentBridgeError(f"override {item!r}: expected key.path=value or ~key.path")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, *YAML_VALUE_ERRORS):
            value = raw  # not YAML (or YAML no value can be built from: 2001-02-30, !!int x): the text as typed
        _set(data, key.strip(), value, item)
    return data


def _walk(data: dict[str, Any], parts: list[str], item: str, create: bool) -> dict[str, Any]:
    node: Any = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise LatentBridgeError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
        if part not in node or node[part] is None:
            if not create:
                raise LatentBridgeError(f"override {item!r}: the recipe has no key {'.'.join(parts[: i + 1])}")
            node[part] = {}
        elif i == 0 and part in _PLUGIN_KINDS and isinstance(node[part], str):  # `translator: linear`
            node[part] = {"name": node[part]}
        node = node[part]
    if not isinstance(node, dict):
        raise LatentBridgeError(f"override {item!r}: {'.'.join(parts)} is not a mapping")
    return node


def _set(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    _walk(data, parts[:-1], item, create=True)[parts[-1]] = value


def _delete(data: dict[str, Any], key: str, item: str) -> None:
    parts = key.split(".")
    parent = _walk(data, parts[:-1], item, create=False)
    if parts[-1] not in parent:
        raise LatentBridgeError(f"override {item!r}: the recipe has no key {key}")
    del parent[parts[-1]]
_PLUGIN_KINDS = {"task": "task", "translator": "translator", "injection": "injection"}
