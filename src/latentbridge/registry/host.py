"""The plugin registry: built-ins registered explicitly, third parties through entry points.

The host owns naming. Every ``register_*`` hook implementation is called on its own, so each class
is recorded with the module and distribution that provided it. Loading never fails because of one
third-party plugin: its problem (an import error, a hook that raises, a class that fails the checks,
a hook name that matches no hook) is recorded in :attr:`Registry.problems` and the rest loads; the
same problem in a built-in plugin raises :class:`PluginError`. A name registered by two providers is
*ambiguous*: both entries are kept and listed, and only looking that name up (``get``, a recipe that
uses it) fails, naming both providers. ``LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party
plugins (built-ins stay); ``LATENTBRIDGE_DISABLE_PLUGINS=dist-a,dist-b`` skips single distributions.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md  # noqa: F401  (kept: callers patch md.entry_points through this module)
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from latentbridge.api import hookspecs
from latentbridge.api.context import StepQuantity
from latentbridge.api.translator import SOFT_TOKEN_FIELDS
from latentbridge.config.schema import ConfigError, collect_config, config_to_dict, did_you_mean
from latentbridge.errors import PluginError
from latentbridge.registry.entries import (
    KINDS,
    Kind,
    KindSpec,
    LoadProblem,
    PluginInfo,
    Provider,
    join_words,
    normalize_distribution,
)
from latentbridge.registry.loading import (
    AUTOLOAD_ENV,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    Loader,
    autoload_enabled,
    disabled_distributions,
)

log = logging.getLogger("latentbridge")

__all__ = [
    "AUTOLOAD_ENV", "DISABLE_ENV", "ENTRY_POINT_GROUP", "KINDS", "Kind", "KindSpec", "LoadProblem", "PluginInfo",
    "Provider", "Registry", "autoload_enabled", "disabled_distributions", "get_registry", "reset_registry",
]


class Registry(Loader):
    """Every registered plugin class by kind and name, and the problems met while loading them."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, list[PluginInfo]]] = {kind: {} for kind in KINDS}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[int, Provider] = {}
        self._load_problems: list[LoadProblem] = []
        self.disabled: list[Provider] = []  # entry points skipped by LATENTBRIDGE_DISABLE_PLUGINS
        self._quantities: dict[str, list[tuple[StepQuantity, Provider]]] = {}

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

    # -- problems ----------------------------------------------------------------------------------

    @property
    def problems(self) -> list[LoadProblem]:
        """Every load problem, then one per ambiguous name (kind order, then name)."""
        ambiguous = [  # the provider recorded is the later registration, the one that collided
            LoadProblem("ambiguous", self.ambiguous_message(kind, name), kind, name, self._entries[kind][name][-1].provider)
            for kind in KINDS for name in self.ambiguous(kind)
        ]
        ambiguous += [
            LoadProblem("ambiguous", f"step quantity '{name}' is ambiguous: provided by "
                        f"{' and '.join(str(p) for p in providers)}; it is left out", "quantity", name, providers[-1])
            for name, providers in self.quantity_providers().items() if len(providers) > 1
        ]
        return [*self._load_problems, *ambiguous]

    def ambiguous(self, kind: str) -> list[str]:
        """Names of this kind registered by more than one provider."""
        return sorted(name for name, entries in self._entries[kind].items() if len(entries) > 1)

    def providers(self, kind: str, name: str) -> list[PluginInfo]:
        """Every entry registered under this kind and name (two or more when it is ambiguous)."""
        return list(self._entries[kind].get(name, []))

    def ambiguous_message(self, kind: str, name: str, path: str | None = None) -> str:
        entries = self._entries[kind][name]
        dists = list(dict.fromkeys(e.provider.distribution for e in entries
                                   if not e.provider.builtin and e.provider.installed))
        if not dists:
            fix = "remove one of them"
        elif len(dists) == 1:
            fix = f"uninstall one or set {DISABLE_ENV}={dists[0]}"
        else:
            fix = f"uninstall one or set {DISABLE_ENV} to one of {', '.join(dists)}"
        what = f"{path}: '{name}'" if path else f"{KINDS[kind].words} '{name}'"
        providers = join_words([str(e.provider) for e in entries])
        return f"{what} is ambiguous: provided by {providers}; {fix}"

    # -- lookup ------------------------------------------------------------------------------------

    # -- shared step quantities and run events -----------------------------------------------------------

    def quantities(self) -> list[StepQuantity]:
        """Every shared step quantity a single provider registered, by name."""
        return [entries[0][0] for _, entries in sorted(self._quantities.items()) if len(entries) == 1]

    def quantity_providers(self) -> dict[str, list[Provider]]:
        return {name: [p for _, p in entries] for name, entries in sorted(self._quantities.items())}

    def event_hook(self):
        """The ``on_run_event`` hook of the plugins installed here (not the run's own loggers)."""
        return self.pm.hook.on_run_event

    def names(self, kind: str) -> list[str]:
        """The names of this kind that can be used: ambiguous names are left out (see :meth:`ambiguous`)."""
        return sorted(name for name, entries in self._entries[kind].items() if len(entries) == 1)

    def all(self) -> list[PluginInfo]:
        """Every entry, both sides of an ambiguous name included, by kind, name and registration order."""
        return [entry for kind in KINDS for name in sorted(self._entries[kind]) for entry in self._entries[kind][name]]

    def get(self, kind: str, name: str, path: str | None = None) -> PluginInfo:
        entries = self._entries[kind].get(name)
        if not entries:
            raise PluginError(self.unknown_message(kind, name, path))
        if len(entries) > 1:
            raise PluginError(self.ambiguous_message(kind, name, path))
        return entries[0]

    def unknown_message(self, kind: str, name: object, path: str | None = None) -> str:
        """Why ``name`` cannot be used: unknown (with a suggestion), or ambiguous (naming the providers)."""
        if isinstance(name, str) and len(self._entries[kind].get(name, ())) > 1:
            return self.ambiguous_message(kind, name, path)
        words = KINDS[kind].words
        hint = did_you_mean(str(name), [*self.names(kind), *self.ambiguous(kind)])
        known = ", ".join(self.names(kind)) or "none"
        if self.ambiguous(kind):
            known += f" (ambiguous: {', '.join(self.ambiguous(kind))})"
        broken = [p for p in self._load_problems if p.kind in (None, kind) and p.problem != "bad-setting"]
        note = ""
        if broken:
            note = (f"; {len(broken)} plugin problem{'s' if len(broken) != 1 else ''} while loading, "
                    "see `latentbridge list-plugins`")
        where = f"{path}: " if path else ""
        return f"{where}unknown {words} {name!r}{hint}; known: {known}{note}"

    def parse_config(self, kind: str, name: str, data: Mapping[str, Any] | None, path: str, problems: list[str]):
        """Validate a plugin's config block; append problems (with key paths) instead of raising."""
        entries = self._entries[kind].get(name)
        if not entries or len(entries) > 1:
            problems.append(self.unknown_message(kind, name, path))
            return None
        config_cls = entries[0].cls.Config
        if kind == "translator" and isinstance(data, Mapping):
            data = _without_legacy_soft_fields(config_cls, name, data, path)
        return collect_config(config_cls, data, path, problems)

    def config_for(self, kind: str, name: str, data: Mapping[str, Any] | None = None, path: str = ""):
        problems: list[str] = []
        config = self.parse_config(kind, name, data, path or f"{kind}.{name}", problems)
        if problems:
            raise ConfigError(problems)
        return config

    def describe_config(self, kind: str, name: str) -> dict[str, Any]:
        return config_to_dict(self.config_for(kind, name))

    def find_provider(self, entries: Iterable[PluginInfo], provider: str) -> list[PluginInfo]:
        """The entries whose distribution (compared as PyPI does) or module is ``provider``."""
        wanted = normalize_distribution(provider)
        return [e for e in entries
                if normalize_distribution(e.provider.distribution) == wanted or e.provider.module == provider]


def _without_legacy_soft_fields(config_cls: type, name: str, data: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """A translator block without the soft-token fields (``scale``, ``target_rms``) its translator does not
    have: every recipe written before they left the base config names them (run folders' recipe.yaml
    included), and they never did anything outside soft tokens. Warns once per call; goes in 0.2."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    legacy = [key for key in SOFT_TOKEN_FIELDS if key in data and key not in fields]
    if not legacy:
        return data
    log.warning("warning: %s: translator '%s' sends no soft tokens, so %s %s ignored; remove %s from the recipe "
                "(accepted until 0.2)", path or "translator", name, " and ".join(legacy),
                "is" if len(legacy) == 1 else "are", "it" if len(legacy) == 1 else "them")
    return {key: value for key, value in data.items() if key not in legacy}


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
