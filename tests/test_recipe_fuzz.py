"""Fuzzing ``latentbridge validate`` (hypothesis): every shipped recipe, randomly broken.

Three fuzzers, each run over every shipped recipe:

* ``test_mutated_recipe_mapping``: the recipe's raw mapping (``read_recipe_data``, its ``base`` chain
  resolved) with 1-4 structured mutations (a key path set to a value of a wrong type, a huge or negative
  number, NaN, a unicode string, a deeply nested list or mapping; keys deleted; blocks duplicated under
  other keys; unknown keys added; whole sections replaced by scalars), written as YAML;
* ``test_mutated_recipe_text``: the shipped file's text with raw mutations (duplicated lines, broken
  indentation, tabs, random bytes, YAML syntax snippets, BOMs, line endings, truncation, deep nesting);
* ``test_fuzzed_overrides``: random ``key.path=value`` / ``~key.path`` overrides after the recipe name.

Each case must end with exit code 0 or 2; on 2 the output starts with ``error:``; never a traceback.

Crashes the fuzzers found are listed in ``KNOWN_CRASHES`` with a minimal input; each has a strict
xfail test (``test_known_crash``). While an entry is listed, the fuzzers count a crash that matches it
(same exception type, raised under the same latentbridge function) instead of failing. Once a crash is
fixed, its xfail test passes, which fails the run (``strict=True``): delete the entry, and the fuzzers
fail on that crash again should it come back. Any other crash fails the fuzzer with its input and
traceback.

``test_zz_fuzz_case_count`` (the last test of the file) prints how many cases ran.
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.cli.app import state
from latentbridge.config.catalog import shipped_recipe, shipped_recipes
from latentbridge.config.recipe import read_recipe_data

runner = CliRunner()
RECIPES = [r.name for r in shipped_recipes()]

CASES: collections.Counter[str] = collections.Counter()  # validate calls made, per fuzzer
KNOWN_HITS: collections.Counter[str] = collections.Counter()  # of those, how many hit a known crash

FUZZ = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no 'explain': it reruns a lot
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """``LATENTBRIDGE_DEBUG`` in the environment would turn user errors into tracebacks."""
    monkeypatch.setattr(state, "debug", False)


# -- known crashes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """A crash found by the fuzzers: the exception types, the innermost latentbridge frame it passes
    (file name, function; one of ``where``), a minimal input (``validate`` arguments; ``{file}`` stands for a file holding
    ``text``, or ``data`` as bytes) and what the fix should do."""

    types: tuple[type[BaseException], ...]
    where: tuple[tuple[str, str], ...]
    args: tuple[str, ...]
    text: str | None = None
    data: bytes | None = None
    reason: str = ""


_YAML_CONSTRUCTOR_ERRORS = (ValueError, KeyError, IndexError, AttributeError, TypeError)
_PARSE_YAML = (("yamlio.py", "parse_yaml"), ("yamlio.py", "_construct_mapping"))  # the loader, or its mapping hook

# Crashes the fuzzers found, all fixed; each minimal input is a regression test below. A new crash the
# fuzzers find and that cannot be fixed at once goes into KNOWN_CRASHES (counted, not failed) with a
# strict xfail, as these did while they were open.
FOUND_CRASHES: dict[str, Crash] = {
    "float-field-huge-int": Crash(
        (OverflowError,), (("schema.py", "_parse_value"),), ("validate", "phase1_full", "train.lr=" + "9" * 400),
        reason="an integer beyond float range given for a float field: float(value) raises OverflowError "
        "(schema.py, _parse_value, the `tp is float` branch); also inside lists (train.betas)",
    ),
    "override-yaml-constructor": Crash(
        _YAML_CONSTRUCTOR_ERRORS, (("overrides.py", "apply_overrides"),),
        ("validate", "phase1_full", "train.lr=2001-02-30"),
        reason="yaml.safe_load of an override value raises ValueError/KeyError/IndexError/AttributeError "
        "(not yaml.YAMLError) for impossible dates or bad explicit tags: '2001-02-30', '!!int abc', "
        "'!!bool x', '!!int -', '!!timestamp x'; overrides.py apply_overrides catches only yaml.YAMLError",
    ),
    "file-yaml-constructor": Crash(
        _YAML_CONSTRUCTOR_ERRORS, _PARSE_YAML, ("validate", "{file}"),
        text="name: x\nseed: 2001-02-30\n",
        reason="the same PyYAML constructor errors in a recipe file: parse_yaml catches only yaml.YAMLError",
    ),
    "override-yaml-deep-nesting": Crash(
        (RecursionError,), (("overrides.py", "apply_overrides"),),
        ("validate", "phase1_full", "train.steps=" + "[" * 1000),
        reason="an override value nested ~1000 deep: PyYAML's composer recurses past the recursion limit",
    ),
    "file-yaml-deep-nesting": Crash(
        (RecursionError,), _PARSE_YAML, ("validate", "{file}"),
        text="name: " + "[" * 1000 + "]" * 1000 + "\n",
        reason="a recipe file nested ~1000 deep: RecursionError from PyYAML's composer in parse_yaml",
    ),
    "file-not-utf8": Crash(
        (UnicodeDecodeError,), (("recipe.py", "_read"),), ("validate", "{file}"), data=b"name: \xff\n",
        reason="a recipe file that is not UTF-8: path.read_text(encoding='utf-8') in recipe.py _read",
    ),
    "surrogate-in-ok-line": Crash(
        (UnicodeEncodeError,), (("recipes.py", "validate"),), ("validate", "phase1_full", "name=\udcff"),
        reason="a recipe name with a lone surrogate (what Python makes of a non-UTF-8 byte in argv, or "
        "\"\\ud800\" in a YAML file) makes the `ok: ...` line unprintable on stdout (cli/recipes.py validate)",
    ),
    "model-path-unknown-user": Crash(
        (RuntimeError,), (("models.py", "resolve_model_path"),),
        ("validate", "phase1_full", "models.source=~no_such_user_xyz/model"),
        reason="Path.expanduser() of '~unknownuser/...' raises RuntimeError('Could not determine home "
        "directory.') in bridge/models.py resolve_model_path",
    ),
    "empty-plugin-name": Crash(
        (AttributeError,), (("facts.py", "model_problems"),), ("validate", "phase1_full", "task="),
        reason="an empty plugin name (`task: ''`) passed validation with no plugin, then validate's model "
        "checks read recipe.task.config of None (config/recipe.py _plugin_block took '' for a name)",
    ),
    "model-path-too-long": Crash(
        (OSError,), (("models.py", "resolve_model_path"),), ("validate", "phase1_full", "models.source=" + "a" * 300),
        reason="a model name longer than the file system allows: path.is_dir() raises OSError(ENAMETOOLONG) "
        "(pathlib swallows only ENOENT-like errors) in bridge/models.py resolve_model_path",
    ),
    "base-name-too-long": Crash(
        (OSError,), (("recipe.py", "_resolve_base"),), ("validate", "{file}"), text="base: " + "a" * 300 + "\n",
        reason="a `base:` name longer than the file system allows: candidate.is_file() raises "
        "OSError(ENAMETOOLONG) in config/recipe.py _resolve_base",
    ),
    "recipe-argument-too-long": Crash(
        (OSError,), (("catalog.py", "find_recipe"),), ("validate", "a" * 300),
        reason="a recipe argument longer than the file system allows: path.is_file() raises "
        "OSError(ENAMETOOLONG) in config/catalog.py find_recipe",
    ),
}

KNOWN_CRASHES: dict[str, Crash] = {}


def known_crash(exc: BaseException) -> str | None:
    """The ``KNOWN_CRASHES`` entry a crash matches, or None."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "latentbridge" in f.filename]
    if not frames:
        return None
    inner = frames[-1]
    where = (Path(inner.filename).name, inner.name)
    for key, crash in KNOWN_CRASHES.items():
        if where in crash.where and type(exc) in crash.types:
            return key
    return None


def check(args: list[str], what: str, fuzzer: str) -> None:
    """Run ``latentbridge ARGS``; fail unless it ended with exit code 0 or 2 and a clean message."""
    CASES[fuzzer] += 1
    result = runner.invoke(app, args)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        key = known_crash(exc)
        if key is not None:
            KNOWN_HITS[key] += 1
            return
        tb = "".join(traceback.format_exception(exc))
        pytest.fail(f"crash (exit {result.exit_code}) on {what}\nargs: {args!r}\n{tb}", pytrace=False)
    output = result.output
    assert result.exit_code in (0, 2), f"exit {result.exit_code} on {what}\nargs: {args!r}\n{output}"
    assert "Traceback" not in output, f"traceback on {what}\nargs: {args!r}\n{output}"
    if result.exit_code == 2:
        assert output.startswith("error:"), f"exit 2 without 'error:' on {what}\nargs: {args!r}\n{output}"
    elif "--show" not in args:
        assert "is a valid recipe" in output, output
    else:
        assert isinstance(yaml.safe_load(output), dict), output


# -- values and keys -------------------------------------------------------------------------------

SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
UNICODE = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=10),
    SURROGATES,
    st.sampled_from(["", " ", "\t", "\n", "\x00", "\u202e", "\ufeff", "😀", "é", "ß", "İ", "[red]x[/]", "[/]",
                     "{question}", "%s", "${HOME}", "../..", "/", "~", "~no_such_user_xyz/model", "tiny-llama",
                     "tiny-mistral", "nul\x00l", "a" * 300]),
)
HUGE = st.one_of(
    st.integers(min_value=2**63), st.integers(max_value=-(2**63)),
    st.sampled_from([10**309, -(10**309), 2**1024, 10**4000, 2**64, 2**31, -1, -(2**31), 0]),
)
NUMBERS = st.one_of(
    st.integers(-1000, 1000), HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, -1e-3]),
)
LEAVES = st.one_of(
    st.none(), st.booleans(), NUMBERS, UNICODE, st.binary(max_size=8), st.dates(), st.datetimes(),
)
WILD = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def deeply_nested(draw, max_depth: int = 80) -> Any:
    value = draw(LEAVES)
    for _ in range(draw(st.integers(1, max_depth))):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=4)): value}
    return value


TRICKY = st.sampled_from([
    10**309, -(10**309), 2**1024, math.nan, math.inf, -math.inf, -1, -(2**63), 0, "", " ", None, True, [], {},
    "\udcff", "\ud800x", "~no_such_user_xyz/model", "2001-02-30", "!!int x", "null", "[", "{a: ",
])
VALUES = st.one_of(TRICKY, WILD, deeply_nested(), NUMBERS, UNICODE, LEAVES)


def wrong_for(old: Any) -> st.SearchStrategy:
    """Values of another type than ``old`` (or of its type, out of range): what a typo or a confused user writes."""
    if isinstance(old, bool):
        return st.one_of(st.sampled_from(["yes", "no", "on", "True", 1, 0, "", None]), NUMBERS, UNICODE)
    if isinstance(old, int):
        return st.one_of(HUGE, st.just(-old - 1), st.floats(allow_nan=True), st.just(str(old)), st.booleans(),
                         st.just([old]), st.just({"value": old}), TRICKY)
    if isinstance(old, float):
        return st.one_of(HUGE, st.sampled_from([math.nan, math.inf, -math.inf, -old, str(old), f"{old}x", "1e999"]),
                         st.booleans(), st.just([old]), TRICKY)
    if isinstance(old, str):
        return st.one_of(NUMBERS, st.booleans(), st.none(), st.just([old]), st.just({old: old}), UNICODE, SURROGATES,
                         st.builds(lambda a, b: a + old + b, UNICODE, UNICODE), st.just(old.upper()), TRICKY)
    return VALUES
MAPPING_KEYS = st.one_of(
    st.text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False),
    st.sampled_from(["base", "remove", "name", "nmae", "modles", "weight", "k", "<<", "~", ".", "a.b", "=",
                     "objectives", "train", "task", "translator", "injection", "seed", "curriculum", "checkpoint",
                     "cache", "resume", "run_dir", "teacher", "loggers", "jsonl", "wandb", "scale_with"]),
)


# -- structured mutations of the raw mapping --------------------------------------------------------


@functools.cache
def raw_recipe(name: str) -> dict[str, Any]:
    return read_recipe_data(name)[0]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _get(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def _containers(root: dict) -> list[tuple]:
    return [()] + [p for p in _paths(root) if isinstance(_get(root, p), dict | list)]


def mutate(draw, data: dict[str, Any]) -> list[str]:
    """Apply one random mutation to ``data`` in place; return its description."""
    paths = _paths(data)
    op = draw(st.sampled_from(["set", "retype", "retype", "delete", "duplicate", "unknown", "scalar", "deep",
                               "swap"]))
    if op == "retype" and paths:
        path = draw(st.sampled_from(paths))
        parent = _get(data, path[:-1])
        parent[path[-1]] = value = draw(wrong_for(parent[path[-1]]))
        return [f"retype {path} = {value!r:.120}"]
    if op in ("set", "deep") and paths:
        path = draw(st.sampled_from(paths))
        value = draw(deeply_nested() if op == "deep" else VALUES)
        _get(data, path[:-1])[path[-1]] = value
        return [f"{op} {path} = {value!r:.120}"]
    if op == "delete" and paths:
        path = draw(st.sampled_from(paths))
        del _get(data, path[:-1])[path[-1]]
        return [f"delete {path}"]
    if op == "duplicate":
        blocks = [p for p in _containers(data) if p]
        if blocks:
            src = draw(st.sampled_from(blocks))
            block = _get(data, src)
            block = block if draw(st.booleans()) else copy.deepcopy(block)  # shared: a YAML anchor and alias
            parent = draw(st.sampled_from([p for p in _containers(data) if isinstance(_get(data, p), dict)]))
            key = draw(st.one_of(st.sampled_from(list(data) or ["x"]), MAPPING_KEYS))
            _get(data, parent)[key] = block  # a shared block under itself makes a cycle: the caller skips it
            return [f"duplicate {src} under {parent} as {key!r}"]
    if op == "unknown":
        dicts = [p for p in _containers(data) if isinstance(_get(data, p), dict)]
        parent = draw(st.sampled_from(dicts))
        key, value = draw(MAPPING_KEYS), draw(VALUES)
        _get(data, parent)[key] = value
        return [f"add {parent} + {key!r} = {value!r:.120}"]
    if op == "scalar":
        sections = [k for k, v in data.items() if isinstance(v, dict | list)] or list(data)
        if sections:
            key = draw(st.sampled_from(sections))
            data[key] = draw(LEAVES)
            return [f"scalar {key} = {data[key]!r:.120}"]
    if op == "swap" and len(data) >= 2:
        a, b = draw(st.lists(st.sampled_from(list(data)), min_size=2, max_size=2, unique=True))
        data[a], data[b] = data[b], data[a]
        return [f"swap {a} <-> {b}"]
    key, value = draw(MAPPING_KEYS), draw(VALUES)
    data[key] = value
    return [f"add {key!r} = {value!r:.120}"]


def _acyclic(value: Any, seen: tuple = ()) -> bool:
    if isinstance(value, dict | list):
        if any(value is s for s in seen):
            return False
        children = value.values() if isinstance(value, dict) else value
        return all(_acyclic(c, (*seen, value)) for c in children)
    return True


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipe_fuzz")


def _case_dir(root: Path, fuzzer: str, recipe: str) -> Path:
    """One folder per fuzzer and recipe, holding only the case's file (a ``base:`` the fuzzer invents
    never finds another case's file)."""
    folder = root / fuzzer / recipe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("recipe", RECIPES)
@settings(FUZZ, max_examples=40)
@given(st.data())
def test_mutated_recipe_mapping(recipe, fuzz_root, data):
    mapping = copy.deepcopy(raw_recipe(recipe))
    steps = []
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        steps += mutate(data.draw, mapping)
        if not _acyclic(mapping):  # a block duplicated into itself: not something YAML can hold
            return
    text = yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False)
    path = _case_dir(fuzz_root, "mapping", recipe) / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    show = ["--show"] if data.draw(st.booleans(), label="show") else []
    check(["validate", *show, str(path)], f"{recipe} with {steps}\n--- file ---\n{text[:2000]}", "mapping")


# -- raw text mutations ----------------------------------------------------------------------------

SNIPPETS = st.sampled_from([
    "&a ", "*a", "*nope", "!!python/object/apply:os.system ['true']", "!!binary x", "!!int abc", "!!float .",
    "!!bool x", "!!timestamp x", "!!set {a}", "<<: *a\n", "<<: [1]\n", "? [1]\n: 2\n", "{", "}", "[", "]", ",",
    ": ", "- ", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! x\n", "#", "|\n", ">-\n", '"', "'", "\\", "\\ud800",
    '"\\ud800"', "2001-02-30", "12:60:99", "0x", "0o9", "1e999", "-.inf", ".nan", "~", "null", "=", "@", "`",
    "\t", "\r", "\x00", "\x1b[31m", "\u2028", "\x85", "\ufeff", "😀", "name: dup\n", "seed: 1\nseed: 2\n",
])

# the YAML text of a value: a key line's new value in a file, or the part after `=` of an override
TRICKY_TEXT = st.sampled_from([
    "2001-02-30", "2001-02-03 25:00:00", "!!int abc", "!!int -", "!!float .", "!!bool x", "!!timestamp x",
    '"\\ud800"', "\udcff", "9" * 400, "-" + "9" * 400, "[" * 1200, "~no_such_user_xyz/model", "&a [*a]",
])
VALUE_TEXT = st.one_of(
    SNIPPETS, UNICODE, st.text(max_size=20), TRICKY_TEXT, TRICKY_TEXT,
    st.sampled_from(["", "1", "-1", "0", "1.5", "-3e-2", "true", "no", "null", "[]", "{}", "[1, 2", "{a: 1",
                     "{a: 1, a: 2}", "[[[]]]", "{k: {k: {k: v}}}", "a=b", "=", "==", "~x", "'quoted'", '"x"',
                     "&x [*x]", "&x {a: *x}", "9" * 400, "-" + "9" * 400, "1" * 5000, "1e400", "nan", ".nan",
                     "2001-02-03", "2001-02-30", "!!int x", "!!float x", "!!bool x", "- a\n- b", "a: b\nc: d",
                     "a\tb", "|\n  block", "soft_only", "linear", "gsm8k", "~no_such_user_xyz/model"]),
    VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True, allow_unicode=True, sort_keys=False)
               .removesuffix("\n...\n").removesuffix("\n")),
    st.integers(1, 1500).map(lambda n: "[" * n + "]" * n),
)


_KEY_LINE = re.compile(rb"^(\s*(?:- )?[^#\s:][^:#]*:[ \t]+)\S")


@st.composite
def text_mutation(draw, text: bytes) -> tuple[bytes, str]:
    lines = text.split(b"\n")
    op = draw(st.sampled_from(["dup_line", "indent", "tab", "bytes", "snippet", "unicode", "delete", "truncate",
                               "bom", "newlines", "deep", "dup_block", "value", "value"]))
    i = draw(st.integers(0, max(len(lines) - 1, 0)))
    pos = draw(st.integers(0, len(text)))
    if op == "value":  # a `key: value` line with another value: the YAML text of a wrong value
        keyed = [k for k, line in enumerate(lines) if _KEY_LINE.match(line)]
        if keyed:
            k = draw(st.sampled_from(keyed))
            new = draw(st.one_of(SNIPPETS, VALUE_TEXT)).encode("utf-8", "surrogatepass")
            lines[k] = _KEY_LINE.match(lines[k]).group(1) + new
            return b"\n".join(lines), f"line {k + 1} value {new!r:.120}"
        op = "dup_line"
    if op == "dup_line":
        lines.insert(i, lines[i])
        return b"\n".join(lines), f"duplicate line {i + 1}"
    if op == "dup_block":
        j = draw(st.integers(i, len(lines)))
        lines[j:j] = lines[i:j]
        return b"\n".join(lines), f"duplicate lines {i + 1}-{j}"
    if op == "indent":
        n = draw(st.integers(-4, 7))
        lines[i] = b" " * n + lines[i] if n >= 0 else lines[i][-n:]
        return b"\n".join(lines), f"indent line {i + 1} by {n}"
    if op == "tab":
        lines[i] = b"\t" + lines[i].lstrip(b" ") if draw(st.booleans()) else lines[i].replace(b" ", b"\t")
        return b"\n".join(lines), f"tab in line {i + 1}"
    if op == "bytes":
        junk = draw(st.binary(min_size=1, max_size=8))
        return text[:pos] + junk + text[pos:], f"insert bytes {junk!r} at {pos}"
    if op == "snippet":
        snippet = draw(SNIPPETS).encode("utf-8", "surrogatepass")
        return text[:pos] + snippet + text[pos:], f"insert {snippet!r} at {pos}"
    if op == "unicode":
        chunk = draw(st.text(min_size=1, max_size=12)).encode("utf-8")
        return text[:pos] + chunk + text[pos:], f"insert {chunk!r} at {pos}"
    if op == "delete":
        n = draw(st.integers(1, 40))
        return text[:pos] + text[pos + n:], f"delete {n} bytes at {pos}"
    if op == "truncate":
        return text[:pos], f"truncate at {pos}"
    if op == "bom":
        bom = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
        return bom + text, f"prefix {bom!r}"
    if op == "newlines":
        eol = draw(st.sampled_from([b"\r\n", b"\r", b"\n\n", b"\x85"]))
        return text.replace(b"\n", eol), f"line endings {eol!r}"
    depth = draw(st.integers(1, 1500))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b"{a: ", b"}"), (b"- ", b"")]))
    closed = draw(st.booleans())
    nest = opener * depth + (closer * depth if closed else b"")
    if opener == b"- ":  # block sequences nest by indentation
        nest = b"".join(b"\n" + b"  " * k + b"- " for k in range(min(depth, 200))) + b"x"
    lines.insert(i, b"deep: " + nest)
    return b"\n".join(lines), f"nest {opener!r} {depth} deep at line {i + 1}"


@pytest.mark.parametrize("recipe", RECIPES)
@settings(FUZZ, max_examples=30)
@given(st.data())
def test_mutated_recipe_text(recipe, fuzz_root, data):
    text = shipped_recipe(recipe).path.read_bytes()
    steps = []
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        text, step = data.draw(text_mutation(text), label="mutation")
        steps.append(step)
    # the file keeps the shipped name, so a `base:` of a derived recipe still finds its shipped parent
    path = _case_dir(fuzz_root, "text", recipe) / f"{recipe}.yaml"
    path.write_bytes(text)
    check(["validate", str(path)], f"{recipe} with {steps}\n--- file ---\n{text[:2000]!r}", "text")


# -- overrides -------------------------------------------------------------------------------------

KEY_PARTS = sorted({str(k) for name in RECIPES for p in _paths(raw_recipe(name)) for k in p}
                   | {"base", "remove", "curriculum", "checkpoint", "cache", "run_dir", "resume", "betas",
                      "systems", "stop", "fade_start", "fade_end", "text_injection", "dtype", "device", "every"})
PART = st.one_of(st.sampled_from(KEY_PARTS), st.sampled_from(["", " ", "~", "=", "0", "-1", "[0]", "é", "\udcff"]),
                 st.text(max_size=6))
# the recipes' key paths, and some of the schema's that no shipped recipe sets
REAL_PATHS = sorted({".".join(map(str, p)) for name in RECIPES for p in _paths(raw_recipe(name))} | {
    "run_dir", "resume", "teacher", "seed", "models.dtype", "models.device", "models.trust_remote_code",
    "task.data_dir", "task.shots", "task.question_template", "train.betas", "train.schedule", "train.max_grad_norm",
    "eval.systems", "eval.stop", "eval.patience", "checkpoint.every", "checkpoint.keep", "cache.source",
    "cache.dir", "curriculum.fade_start", "curriculum.fade_end", "curriculum.text_injection", "loggers",
    "loggers.jsonl", "loggers.wandb", "loggers.tensorboard", "loggers.mlflow", "objectives.kl.scale_with",
})
KEY_PATH = st.one_of(
    st.sampled_from(REAL_PATHS),  # keys the recipes have (train.lr, objectives.kl.weight, ...)
    st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(REAL_PATHS), PART),
    st.lists(PART, min_size=1, max_size=4).map(".".join),
)
OVERRIDE = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(REAL_PATHS), st.one_of(TRICKY_TEXT, VALUE_TEXT)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(REAL_PATHS), VALUE_TEXT),
    st.builds(lambda k, v: f"{k}={v}", KEY_PATH, VALUE_TEXT),
    KEY_PATH.map(lambda k: f"~{k}"),
    KEY_PATH,
    st.text(max_size=20),
    st.sampled_from(["~", "~~", "=", "==", "=1", "= x", "~=", ".", "..=1", "~.", "=~", "a.=1", ".a=1", "~a.",
                     "--show", "-x=1"]),
)


@pytest.mark.parametrize("recipe", RECIPES)
@settings(FUZZ, max_examples=40)
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=4), show=st.booleans())
def test_fuzzed_overrides(recipe, overrides, show):
    # `--` ends the options: an override that starts with '-' is an override, not an unknown option
    args = ["validate", *(["--show"] if show else []), recipe, "--", *overrides]
    check(args, f"{recipe} with overrides {overrides!r}", "overrides")


# -- the crashes found, each with its minimal input -------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [*(pytest.param(key, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=crash.reason))
       for key, crash in KNOWN_CRASHES.items()), *FOUND_CRASHES],
)
def test_known_crash(key, tmp_path):
    """The minimal input of a crash the fuzzers found must end cleanly: exit 2 and one ``error:`` line."""
    crash = KNOWN_CRASHES.get(key) or FOUND_CRASHES[key]
    args = list(crash.args)
    if "{file}" in args:
        path = tmp_path / "recipe.yaml"
        if crash.data is not None:
            path.write_bytes(crash.data)
        else:
            path.write_text(crash.text, encoding="utf-8")
        args = [str(path) if a == "{file}" else a for a in args]
    result = runner.invoke(app, args)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        if known_crash(exc) != key:  # another crash now: a plain failure, not the expected one
            pytest.fail("".join(traceback.format_exception(exc)), pytrace=False)
        raise AssertionError(f"{key}: {type(exc).__name__}: {exc}")  # the expected failure (xfail)
    if result.exit_code not in (0, 2) or "Traceback" in result.output:
        pytest.fail(f"exit {result.exit_code}\n{result.output}", pytrace=False)
    if result.exit_code == 2 and not result.output.startswith("error:"):
        pytest.fail(f"exit 2 without 'error:'\n{result.output}", pytrace=False)
    assert result.exit_code == 2 and len(result.output) < 2000, result.output


def test_zz_fuzz_case_count(capsys):
    """Runs last in this file: how many cases the fuzzers ran (printed even under output capture)."""
    with capsys.disabled():
        known = ", ".join(f"{k}: {n}" for k, n in sorted(KNOWN_HITS.items())) or "none"
        print(f"\nrecipe fuzz: {sum(CASES.values())} cases ({dict(CASES)}); known crashes hit: {known}")


def test_an_alias_bomb_gives_a_short_message():
    """YAML aliases share one list many times over: the message shows a bounded prefix, not 3.5 GB."""
    levels = ["&l0 [1,1,1,1,1,1,1,1,1,1]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    result = runner.invoke(app, ["validate", "phase1_full", "seed=[" + ", ".join(levels) + "]"])
    assert result.exit_code == 2 and result.output.startswith("error:")
    assert len(result.output) < 1000 and "…" in result.output


def test_a_bare_tilde_override_says_what_it_needs():
    result = runner.invoke(app, ["validate", "phase1_full", "~"])
    assert result.exit_code == 2 and "expected ~key.path (the key to delete)" in result.output
