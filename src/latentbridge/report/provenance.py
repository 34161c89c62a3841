"""Provenance of a kept run: was it made from committed code that holds its recipe?

A published table reads only runs that a reader can rerun from a commit (lesson 17 of the design
notes: kept runs recorded a commit that lacked their own recipe). :func:`provenance_problems` reads
the run's ``run.json`` and resolved ``recipe.yaml`` and asks the git history of the repository that
publishes it; nothing is built or imported from the old commit.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from latentbridge.io.rundir import git_output

# where an option or plugin the recipe names must be known at the commit: the core, the built-in
# plugins and the package metadata (entry points)
SOURCE_PATHS = ("src", "plugins", "pyproject.toml")
SHIPPED_RECIPES = "recipes"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def provenance_problems(folder: Path, repo: Path) -> list[str]:
    """Why the run in ``folder`` may not be published from ``repo`` (empty when it may).

    Refused: a run whose ``run.json`` says its tree was not clean (``git.clean`` false or unknown), at
    the start or at any resume; a run that records no commit; and a run whose commit lacks its recipe:
    the commit must be in ``repo``'s history and hold the shipped recipe ``recipes/<name>.yaml`` (and
    every ``base`` it inherits from), every option name the resolved recipe sets (``task.supervise``,
    ``source.view``, ...) must occur in the commit's source (``src/``, ``plugins/``, pyproject.toml),
    and every latentbridge plugin module the run used must exist there. Runs recorded before the clean
    flag existed (``git_commit`` only) are judged by the commit check alone."""
    info = json.loads((folder / "run.json").read_text())
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text()) if (folder / "recipe.yaml").is_file() else {}
    git = info.get("git")
    records: list[tuple[str, dict[str, Any]]] = [("made", git if isinstance(git, dict) else {"commit": info.get("git_commit")})]
    records += [(f"resumed at step {r.get('step')}", r.get("git") or {}) for r in info.get("resumes") or []]
    problems: list[str] = []
    for label, record in records:
        commit = record.get("commit")
        if "clean" in record and record["clean"] is False:
            problems.append(f"{label} on a dirty tree (uncommitted changes {record.get('diff_digest')} over {_short(commit)})")
        elif "clean" in record and record["clean"] is not True and commit:
            problems.append(f"{label} without a record of whether the tree was clean")
        if not commit:
            problems.append(f"{label} from no recorded commit (not a git checkout?)")
            continue
        problems += commit_problems(repo, commit, info.get("recipe") or (recipe or {}).get("name"), recipe or {},
                                    info.get("plugins") or {})
    return list(dict.fromkeys(problems))


def commit_problems(repo: Path, commit: str, name: str | None, recipe: dict[str, Any],
                    plugins: dict[str, Any]) -> list[str]:
    """What ``commit`` lacks of a run of the shipped recipe ``name`` (resolved: ``recipe``) using ``plugins``."""
    short = _short(commit)
    if not _exists(str(repo), f"{commit}^{{commit}}"):
        return [f"commit {short} is not in the history of {repo}"]
    if not name:
        return ["records no recipe name"]
    problems = []
    path: str | None = f"{SHIPPED_RECIPES}/{name}.yaml"
    seen: set[str] = set()
    while path is not None and path not in seen:  # the recipe, then the base chain
        seen.add(path)
        if not _exists(str(repo), f"{commit}:{path}"):
            problems.append(f"commit {short} lacks its recipe {path}")
            break
        path = _base_path(_show(str(repo), f"{commit}:{path}"), path)
    options = sorted(set(option_paths(recipe)))
    unknown_words = _unknown_words(str(repo), commit, frozenset(p.rsplit(".", 1)[-1] for p in options))
    unknown = [p for p in options if p.rsplit(".", 1)[-1] in unknown_words]
    if unknown:
        problems.append(f"commit {short} does not know the recipe's option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}")
    for plugin, record in sorted(plugins.items()):
        module = (record or {}).get("module") if isinstance(record, dict) else None
        if (record or {}).get("distribution") == "latentbridge" and module and not any(
                _exists(str(repo), f"{commit}:{p}") for p in _module_files(module)):
            problems.append(f"commit {short} lacks the plugin {plugin} ({module})")
    return problems


def option_paths(recipe: Any, prefix: str = "") -> list[str]:
    """Every option name the recipe sets, as dotted paths (``task.supervise``), at every depth."""
    out: list[str] = []
    if isinstance(recipe, dict):
        for key, value in recipe.items():
            if isinstance(key, str) and _WORD.match(key):
                out.append(prefix + key)
                out += option_paths(value, f"{prefix}{key}.")
    return out


def _short(commit: str | None) -> str:
    return (commit or "none")[:7]


def _module_files(module: str) -> list[str]:
    parts = module.split(".")
    if parts[:2] == ["latentbridge", "plugins"]:
        base = "/".join(["plugins", *parts[2:]])
    else:
        base = "/".join(["src", *parts])
    return [f"{base}.py", f"{base}/__init__.py"]


def _base_path(text: bytes | None, child: str) -> str | None:
    """The recipe file that ``child`` (text at the commit) inherits from, or None."""
    try:
        data = yaml.safe_load(text or b"") or {}
    except yaml.YAMLError:
        return None
    base = data.get("base") if isinstance(data, dict) else None
    if not isinstance(base, str) or not base.strip():
        return None
    base = base.strip()
    stem = base[:-5] if base.endswith(".yaml") else base
    return str(Path(child).parent / f"{stem}.yaml") if "/" in base else f"{SHIPPED_RECIPES}/{stem}.yaml"


@functools.lru_cache(maxsize=4096)
def _exists(repo: str, spec: str) -> bool:
    return git_output(["cat-file", "-e", spec], Path(repo)) is not None


@functools.lru_cache(maxsize=256)
def _show(repo: str, spec: str) -> bytes | None:
    return git_output(["cat-file", "blob", spec], Path(repo))


@functools.lru_cache(maxsize=256)
def _unknown_words(repo: str, commit: str, words: frozenset[str]) -> frozenset[str]:
    """The ``words`` that occur nowhere in the commit's source (as whole words)."""
    if not words:
        return frozenset()
    patterns = [arg for word in sorted(words) for arg in ("-e", word)]
    out = git_output(["grep", "-h", "-o", "-w", "-I", "-F", *patterns, commit, "--", *SOURCE_PATHS], Path(repo))
    found = set(out.decode(errors="replace").split()) if out else set()  # git grep exits 1 when nothing matches
    return frozenset(words - found)
