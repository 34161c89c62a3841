"""Safe YAML in and out: duplicate keys refused, syntax errors as one line with file, line and column."""

from __future__ import annotations

from typing import Any

import yaml

from latentbridge.errors import LatentBridgeError

# -- YAML ------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "<recipe>") -> Any:
    """Safe YAML; a syntax error becomes one line with the file, line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "malformed YAML"
        raise LatentBridgeError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise LatentBridgeError(f"{source}: malformed YAML: {exc}") from None
    except RecursionError:
        raise LatentBridgeError(f"{source}: malformed YAML: nested too deeply") from None
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:  # e.g. 2001-02-30, !!int x
        raise LatentBridgeError(f"{source}: malformed YAML: a value cannot be read ({type(exc).__name__}: "
                                f"{str(exc)[:120]})") from None


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
