"""Typed configs: stdlib dataclasses validated from plain data (YAML) with key paths in every message.

Every plugin and every recipe section is a dataclass whose fields are declared with :func:`option`, so
defaults, constraints and one line of documentation sit together::

    @dataclass
    class Config(ObjectiveConfig):
        temperature: float = option(1.0, gt=0, help="softmax temperature of teacher and student")

:func:`parse_config` turns a mapping into an instance or raises :class:`ConfigError` listing *every*
problem found (``objectives.kl.temperature: expected a number > 0, got "hot"``); unknown keys are
rejected with a did-you-mean. :func:`config_to_dict` is the inverse, used for the resolved recipe and
for the JSON written beside saved weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from latentbridge.errors import ConfigError

T = TypeVar("T")

_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INVALID = object()


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


SHOWN_CHARS = 120  # a value in a message is cut after this many characters


def show_value(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as the user wrote it: strings in double quotes, YAML spellings for the rest; cut short
    (``…``) after about ``limit`` characters, however large or deeply shared the value is."""
    out: list[str] = []
    size = [0]

    def put(text: str) -> bool:
        out.append(text)
        size[0] += len(text)
        return size[0] <= limit

    def walk(v: Any, depth: int) -> bool:
        if depth > 20:
            return put("…")
        if v is None:
            return put("null")
        if isinstance(v, bool):
            return put("true" if v else "false")
        if isinstance(v, list | tuple):
            if not put("["):
                return False
            for i, item in enumerate(v):
                if (i and not put(", ")) or not walk(item, depth + 1):
                    return False
            return put("]")
        if isinstance(v, dict):
            if not put("{"):
                return False
            for i, (k, item) in enumerate(v.items()):
                if (i and not put(", ")) or not walk(k, depth + 1) or not put(": ") or not walk(item, depth + 1):
                    return False
            return put("}")
        try:
            return put(json.dumps(v) if isinstance(v, str | int | float) and not _huge(v) else repr(v)[:limit])
        except (TypeError, ValueError):
            return put(repr(v)[:limit])

    complete = walk(value, 0)
    text = "".join(out)
    return text if complete and len(text) <= limit else text[:limit] + "…"


def _huge(value: Any) -> bool:
    return isinstance(value, int) and abs(value) > 10**100  # str(int) is slow and capped beyond this


def is_text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (no lone surrogates, as a bad byte in argv gives)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _bounds_text(meta: Mapping[str, Any]) -> str:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    low = f">= {_num(ge)}" if ge is not None else f"> {_num(gt)}" if gt is not None else None
    high = f"<= {_num(le)}" if le is not None else f"< {_num(lt)}" if lt is not None else None
    if low and high:
        return f" {low} and {high}"
    return f" {low or high}" if (low or high) else ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def describe_type(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    """Human words for a type, as used in ``expected ...`` messages."""
    meta = meta or {}
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe_type(a, meta) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        inner = describe_type(args[0]) if args else "values"
        return f"a list of {_plural(inner)}"
    if origin in (dict, Mapping) or tp in (dict, Mapping) or dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer" + _bounds_text(meta)
    if tp is float:
        return "a number" + _bounds_text(meta)
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            noun, _, rest = text[len(article):].partition(" ")
            return f"{noun}s{(' ' + rest) if rest else ''}"
    return text


def _is_scalar(tp: Any) -> bool:
    return tp in (bool, int, float, str) or get_origin(tp) is Literal


def _check_bounds(value: float, meta: Mapping[str, Any]) -> bool:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    return not (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
        or (lt is not None and value >= lt)
    )


def _parse_value(tp: Any, value: Any, path: str, meta: Mapping[str, Any], problems: list[str]) -> Any:
    def fail() -> Any:
        problems.append(f"{path}: expected {describe_type(tp, meta)}, got {show_value(value)}")
        return _INVALID

    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            return None if type(None) in args else fail()
        options = [a for a in args if a is not type(None)]
        for option_tp in options:
            trial: list[str] = []
            parsed = _parse_value(option_tp, value, path, meta, trial)
            if not trial:
                return parsed
        if len(options) == 1 and not _is_scalar(options[0]):  # a list or mapping: its own message is precise
            problems.extend(trial)
            return _INVALID
        return fail()
    if origin is Literal:
        if value in args and isinstance(value, type(args[0])):
            return value
        hint = did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
        problems.append(f"{path}: expected {describe_type(tp)}, got {show_value(value)}{hint}")
        return _INVALID
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            return fail()
        return _parse_dataclass(tp, value, path, problems)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            return fail()
        inner = args[0] if args else Any
        items = [_parse_value(inner, v, join_path(path, i), {}, problems) for i, v in enumerate(value)]
        return items if origin is not tuple else tuple(items)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            return fail()
        inner = args[1] if len(args) == 2 else Any
        return {k: _parse_value(inner, v, join_path(path, str(k)), {}, problems) for k, v in value.items()}
    if tp is bool:
        return value if isinstance(value, bool) else fail()
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return fail()
        return value if _check_bounds(value, meta) else fail()
    if tp is float:
        if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
            value_f = float(value)  # YAML 1.1 reads "1e-3" as a string; accept it as the number it is
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return fail()
        else:
            try:
                value_f = float(value)
            except OverflowError:  # an integer beyond float range
                return fail()
        if value_f != value_f or not _check_bounds(value_f, meta):  # NaN never satisfies a bound
            return fail()
        return value_f
    if tp is str:
        return value if isinstance(value, str) and is_text(value) else fail()
    raise TypeError(f"config type {tp!r} at {path} is not supported")


def _parse_dataclass(cls: type[T], data: Mapping[str, Any], path: str, problems: list[str]) -> T | Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    before = len(problems)
    for key in data:
        if key not in fields:
            problems.append(f"{join_path(path, str(key))}: unknown key{did_you_mean(str(key), fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        sub = join_path(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{sub}: required key is missing")
            continue
        values[name] = _parse_value(hints[name], data[name], sub, f.metadata, problems)
    if len(problems) > before:
        return _INVALID
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if callable(check):  # cross-field rules: a list of (key, message)
        for key, message in check():
            problems.append(f"{join_path(path, key)}: {message}")
    return instance if len(problems) == before else _INVALID


def parse_config(cls: type[T], data: Mapping[str, Any] | None, path: str = "", source: str | None = None) -> T:
    """Validate ``data`` against the dataclass ``cls``; raise :class:`ConfigError` with every problem."""
    problems: list[str] = []
    result = collect_config(cls, data, path, problems)
    if problems:
        raise ConfigError(problems, source)
    return result


def collect_config(cls: type[T], data: Mapping[str, Any] | None, path: str, problems: list[str]) -> T | None:
    """Like :func:`parse_config`, but append problems to ``problems`` and return None on failure."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'config'}: expected a mapping, got {show_value(data)}")
        return None
    result = _parse_dataclass(cls, data, path, problems)
    return None if result is _INVALID else result


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain-data copy of a config dataclass (nested dataclasses included)."""
    return dataclasses.asdict(config)


def config_fields(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type words, default, help)`` for each field: the documented defaults of a plugin."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        rows.append((f.name, describe_type(hints[f.name], f.metadata), default, f.metadata.get("help", "")))
    return rows
