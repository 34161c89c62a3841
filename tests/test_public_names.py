"""Every name the README and the example plugin packages use exists: plugin authors write against them.

``lb.<name>`` and ``latentbridge.<name>`` attributes, ``from latentbridge[.module] import ...`` lines, and
dotted ``latentbridge.<module>[.<attribute>]`` paths in the README's text and the example packages' code.
A name that moves keeps an alias for a release (see CHANGELOG.md), so this test keeps passing with it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import latentbridge as lb

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "plugins" / "examples").rglob("*.py"))]


def _text() -> str:
    return "\n".join(p.read_text() for p in SOURCES)


def _resolve(path: str) -> object:
    """``latentbridge.a.b.c``: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def _imports(text: str) -> list[tuple[str, str]]:
    out = []
    found = re.findall(r"from (latentbridge[\w.]*) import \(([\w ,\n#()'.-]+?)\)", text)  # parenthesised
    found += re.findall(r"from (latentbridge[\w.]*) import ([\w ,]+)$", text, re.M)  # one line
    for module, names in found:
        for part in names.split(","):
            name = part.split("#")[0].split(" as ")[0].strip()
            if name.isidentifier():
                out.append((module, name))
    return out


def test_the_sources_use_names_at_all():
    text = _text()
    assert len(set(re.findall(r"\blb\.\w+", text))) >= 5 and len(_imports(text)) >= 10


@pytest.mark.parametrize("name", sorted(set(re.findall(r"\blb\.([A-Za-z_]\w*)", _text()))))
def test_every_lb_name_exists(name):
    assert getattr(lb, name) is not None


@pytest.mark.parametrize(("module", "name"), sorted(set(_imports(_text()))))
def test_every_imported_name_exists(module, name):
    assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"


@pytest.mark.parametrize("path", sorted(set(re.findall(r"`(latentbridge(?:\.[A-Za-z_]\w*)+)`", _text()))))
def test_every_dotted_path_in_the_readme_resolves(path):
    _resolve(path)


def test_a_moved_module_keeps_its_names_with_a_deprecation_warning():
    import sys
    import warnings

    sys.modules.pop("latentbridge.layout", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from latentbridge.layout import Soft, Text, assemble, positions_from_mask  # noqa: F401
    assert any(issubclass(w.category, DeprecationWarning) and "latentbridge.api.layout" in str(w.message) for w in caught)
    from latentbridge import Soft as Home

    assert Soft is Home
