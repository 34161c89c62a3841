"""What the registry records: the kinds of plugin, who provided a class, and what went wrong loading one."""

from __future__ import annotations

import importlib.metadata as md
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from latentbridge._version import __version__
from latentbridge.api.injection import InjectionConfig, InjectionMode
from latentbridge.api.logger import Logger, LoggerConfig
from latentbridge.api.objective import Objective, ObjectiveConfig
from latentbridge.api.system import System, SystemConfig
from latentbridge.api.task import Task, TaskConfig
from latentbridge.api.translator import Translator, TranslatorConfig

Kind = Literal["objective", "translator", "injection", "task", "logger", "system"]

BUILTIN_DISTRIBUTION = "latentbridge"


@dataclass(frozen=True)
class KindSpec:
    hook: str
    base: type
    config_base: type
    words: str  # how the kind is named in messages


# The one table of plugin kinds (host.py and loading.py both read it): a new kind is one entry here.
KINDS: dict[str, KindSpec] = {
    "objective": KindSpec("register_objectives", Objective, ObjectiveConfig, "objective"),
    "translator": KindSpec("register_translators", Translator, TranslatorConfig, "translator"),
    "injection": KindSpec("register_injection_modes", InjectionMode, InjectionConfig, "injection mode"),
    "task": KindSpec("register_tasks", Task, TaskConfig, "task"),
    "logger": KindSpec("register_loggers", Logger, LoggerConfig, "logger"),
    "system": KindSpec("register_systems", System, SystemConfig, "evaluation system"),
}
QUANTITY_HOOK = "register_step_quantities"  # shared step quantities: objects, not classes (see collect)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def normalize_distribution(name: str) -> str:
    """A distribution name as PyPI compares them: case-insensitive, runs of ``-_.`` the same."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


@dataclass(frozen=True)
class Provider:
    """Who provided a plugin: the module (or plugin object) name and its distribution."""

    module: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.module} ({self.distribution} {self.version})"

    @property
    def builtin(self) -> bool:
        """Shipped with latentbridge itself: a problem here is our bug, so loading raises."""
        return normalize_distribution(self.distribution) == BUILTIN_DISTRIBUTION

    @property
    def installed(self) -> bool:
        return self.distribution != "(not installed)"


def provider_for(plugin: object, name: str, dist: md.Distribution | None) -> Provider:
    module = getattr(plugin, "__name__", None) or name
    if dist is not None:
        return Provider(module, dist.metadata["Name"], dist.version)
    top = module.split(".")[0]
    if top == "latentbridge":
        return Provider(module, BUILTIN_DISTRIBUTION, __version__)
    dists = md.packages_distributions().get(top, [])
    if dists:
        return Provider(module, dists[0], md.version(dists[0]))
    return Provider(module, "(not installed)", "-")


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    cls: type
    provider: Provider
    status: str = "ok"  # "ok", or "ambiguous" when another provider registered the same kind and name

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "distribution": self.provider.distribution,
            "version": self.provider.version,
            "module": self.provider.module,
            "description": self.description,
        }


# What can go wrong with one third-party plugin; each is recorded instead of failing the whole registry.
PROBLEMS = {
    "import-error": "an entry point failed to import",
    "invalid-plugin": "pluggy refused the plugin object (a hook implementation with wrong arguments)",
    "unknown-hook": "a hook implementation whose name matches no hook (a typo)",
    "hook-error": "a register_* hook implementation raised",
    "invalid-class": "a registered class failed the checks (base class, name, Config)",
    "ambiguous": "two providers registered the same kind and name",
    "bad-setting": "a registry setting (an environment variable) was partly ignored",
}


@dataclass(frozen=True)
class LoadProblem:
    """One problem found while loading plugins; ``message`` is one line that names the provider."""

    problem: str  # a key of PROBLEMS
    message: str
    kind: str | None = None  # the plugin kind, when known
    name: str | None = None  # the plugin (or entry point) name, when known
    provider: Provider | None = None

    def as_json(self) -> dict[str, Any]:
        """A row of ``list-plugins --json``: the keys of a plugin row, ``"kind": "problem"``, and details."""
        return {
            "kind": "problem",
            "name": self.name,
            "status": self.problem,
            "distribution": self.provider.distribution if self.provider else None,
            "version": self.provider.version if self.provider else None,
            "module": self.provider.module if self.provider else None,
            "description": self.message,
            "problem": self.problem,
            "plugin_kind": self.kind,
            "message": self.message,
        }


def join_words(items: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
