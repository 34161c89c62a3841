"""The plugin registry: built-ins registered explicitly, third parties through entry points.

The host owns naming. Every ``register_*`` hook implementation is called on its own, so each class
is recorded with the module and distribution that provided it; a name registered twice is an error
naming both providers, and a hook implementation that matches no hook specification fails loudly.
Set ``LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD=1`` to skip third-party plugins (built-ins stay).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import inspect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from latentbridge._version import __version__
from latentbridge.api import hookspecs
from latentbridge.api.injection import InjectionConfig, InjectionMode
from latentbridge.api.objective import Objective, ObjectiveConfig
from latentbridge.api.task import Task, TaskConfig
from latentbridge.api.translator import Translator, TranslatorConfig
from latentbridge.config.schema import ConfigError, collect_config, config_to_dict, did_you_mean
from latentbridge.errors import PluginError

ENTRY_POINT_GROUP = "latentbridge"
AUTOLOAD_ENV = "LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD"

Kind = Literal["objective", "translator", "injection", "task"]


@dataclass(frozen=True)
class KindSpec:
    hook: str
    base: type
    config_base: type
    words: str  # how the kind is named in messages


KINDS: dict[str, KindSpec] = {
    "objective": KindSpec("register_objectives", Objective, ObjectiveConfig, "objective"),
    "translator": KindSpec("register_translators", Translator, TranslatorConfig, "translator"),
    "injection": KindSpec("register_injection_modes", InjectionMode, InjectionConfig, "injection mode"),
    "task": KindSpec("register_tasks", Task, TaskConfig, "task"),
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Provider:
    """Who provided a plugin: the module (or plugin object) name and its distribution."""

    module: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.module} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    cls: type
    provider: Provider

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.provider.distribution,
            "version": self.provider.version,
            "module": self.provider.module,
            "description": self.description,
        }


def autoload_enabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def _provider_for(plugin: object, name: str, dist: md.Distribution | None) -> Provider:
    module = getattr(plugin, "__name__", None) or name
    if dist is not None:
        return Provider(module, dist.metadata["Name"], dist.version)
    top = module.split(".")[0]
    if top == "latentbridge":
        return Provider(module, "latentbridge", __version__)
    dists = md.packages_distributions().get(top, [])
    if dists:
        return Provider(module, dists[0], md.version(dists[0]))
    return Provider(module, "(not installed)", "-")


class Registry:
    """Every registered plugin class by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[int, Provider] = {}

    # -- loading -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, *, autoload: bool | None = None, extra: Iterable[object] = ()) -> Registry:
        """Built-ins, then (unless disabled) entry-point plugins, then ``extra`` plugin objects."""
        from latentbridge.plugins import BUILTIN_PLUGINS

        registry = cls()
        for module_name in BUILTIN_PLUGINS:
            registry.add_plugin(importlib.import_module(module_name))
        if autoload_enabled() if autoload is None else autoload:
            registry.add_entry_points()
        for plugin in extra:
            registry.add_plugin(plugin)
        registry.collect()
        return registry

    def add_plugin(self, plugin: object, name: str | None = None, dist: md.Distribution | None = None) -> None:
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        provider = _provider_for(plugin, name, dist)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {provider}: {exc}") from None
        except ValueError as exc:  # already registered under that name
            raise PluginError(f"plugin {provider} could not be registered: {exc}") from None
        self._providers[id(plugin)] = provider

    def add_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            where = f"{dist.metadata['Name']} {dist.version}" if dist else "unknown distribution"
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must name itself
                raise PluginError(
                    f"plugin '{ep.name}' ({where}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self.add_plugin(plugin, name=ep.name, dist=dist)

    def collect(self) -> None:
        """Call each plugin's ``register_*`` hooks, one plugin at a time, and check for unknown hooks."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            provider = self._providers.get(id(exc.plugin))
            hook = re.search(r"unknown hook '([^']+)'", str(exc))
            hint = did_you_mean(hook.group(1), [k.hook for k in KINDS.values()]) if hook else ""
            raise PluginError(f"plugin {provider}: {exc}{hint}") from None
        for kind, spec in KINDS.items():
            caller = getattr(self.pm.hook, spec.hook)
            for impl in caller.get_hookimpls():  # registration order
                provider = self._providers[id(impl.plugin)]
                try:
                    impl.function(register=self._register_function(kind, provider))
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {provider} raised in {spec.hook}: {type(exc).__name__}: {exc}"
                    ) from exc

    def _register_function(self, kind: str, provider: Provider):
        spec = KINDS[kind]

        def register(cls: type) -> None:
            self.register(kind, cls, provider)

        register.__doc__ = f"Register one {spec.words} class."
        return register

    def register(self, kind: str, cls: type, provider: Provider) -> None:
        spec = KINDS[kind]
        if not (inspect.isclass(cls) and issubclass(cls, spec.base)):
            raise PluginError(
                f"plugin {provider}: register_{kind}s got {cls!r}, which is not a subclass of {spec.base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise PluginError(
                f"plugin {provider}: {spec.words} class {cls.__name__} needs a class attribute `name` "
                f"of lowercase letters, digits and underscores, got {name!r}"
            )
        config = getattr(cls, "Config", None)
        if not (dataclasses.is_dataclass(config) and issubclass(config, spec.config_base)):
            raise PluginError(
                f"plugin {provider}: {spec.words} '{name}' needs `Config`, a dataclass subclass of "
                f"{spec.config_base.__name__}"
            )
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{spec.words} '{name}' is registered twice: by {existing.provider} and by {provider}"
            )
        self._entries[kind][name] = PluginInfo(kind, name, cls, provider)

    # -- lookup ------------------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def all(self) -> list[PluginInfo]:
        return [self._entries[kind][name] for kind in KINDS for name in self.names(kind)]

    def get(self, kind: str, name: str, path: str | None = None) -> PluginInfo:
        entry = self._entries[kind].get(name)
        if entry is None:
            raise PluginError(self.unknown_message(kind, name, path))
        return entry

    def unknown_message(self, kind: str, name: object, path: str | None = None) -> str:
        words = KINDS[kind].words
        hint = did_you_mean(str(name), self.names(kind))
        known = ", ".join(self.names(kind)) or "none"
        where = f"{path}: " if path else ""
        return f"{where}unknown {words} {name!r}{hint}; known: {known}"

    def parse_config(self, kind: str, name: str, data: Mapping[str, Any] | None, path: str, problems: list[str]):
        """Validate a plugin's config block; append problems (with key paths) instead of raising."""
        if name not in self._entries[kind]:
            problems.append(self.unknown_message(kind, name, path))
            return None
        return collect_config(self._entries[kind][name].cls.Config, data, path, problems)

    def config_for(self, kind: str, name: str, data: Mapping[str, Any] | None = None, path: str = ""):
        problems: list[str] = []
        config = self.parse_config(kind, name, data, path or f"{kind}.{name}", problems)
        if problems:
            raise ConfigError(problems)
        return config

    def describe_config(self, kind: str, name: str) -> dict[str, Any]:
        return config_to_dict(self.config_for(kind, name))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry.load()
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None
