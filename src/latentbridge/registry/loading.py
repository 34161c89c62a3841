"""Loading plugins: entry points, pluggy registration, the ``register_*`` hooks and the class checks.

A problem of one third-party plugin (an import that fails, a hook that raises, a class that fails the
checks, a hook name that matches no hook) is recorded as a :class:`LoadProblem` and the rest loads;
the same problem in a built-in plugin (distribution ``latentbridge``) is our bug and raises
:class:`PluginError`. A name registered by two providers keeps both entries; looking it up is then an
error naming both (see :mod:`latentbridge.registry.host`).

Switches: ``LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD=1`` skips every third-party entry point;
``LATENTBRIDGE_DISABLE_PLUGINS=dist-a,dist-b`` skips those distributions' entry points (names compared
as PyPI does: case-insensitive, ``-``, ``_`` and ``.`` alike). Built-ins always load.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import inspect
import logging
import os

import pluggy

from latentbridge.api.context import StepQuantity
from latentbridge.api.system import RESERVED_NAMES, ROLES
from latentbridge.config.schema import did_you_mean
from latentbridge.errors import PluginError
from latentbridge.registry.entries import (
    BUILTIN_DISTRIBUTION,
    KINDS,
    NAME_RE,
    QUANTITY_HOOK,
    LoadProblem,
    PluginInfo,
    Provider,
    normalize_distribution,
    provider_for,
)

log = logging.getLogger("latentbridge")

ENTRY_POINT_GROUP = "latentbridge"
AUTOLOAD_ENV = "LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_ENV = "LATENTBRIDGE_DISABLE_PLUGINS"


def autoload_enabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def disabled_distributions() -> tuple[set[str], str | None]:
    """The normalised names in ``LATENTBRIDGE_DISABLE_PLUGINS``, and a warning if it named latentbridge."""
    names = {normalize_distribution(n) for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    if BUILTIN_DISTRIBUTION not in names:
        return names, None
    return names - {BUILTIN_DISTRIBUTION}, (
        f"{DISABLE_ENV}: '{BUILTIN_DISTRIBUTION}' is ignored: the built-in plugins always load "
        f"(set {AUTOLOAD_ENV}=1 to turn off every third-party plugin instead)"
    )


def flat(text: object) -> str:
    """A message on one line."""
    return " ".join(str(text).split())


def one_line(exc: BaseException) -> str:
    text = flat(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Loader:
    """The loading half of :class:`~latentbridge.registry.host.Registry` (a mixin: state lives there)."""

    pm: pluggy.PluginManager
    _entries: dict[str, dict[str, list[PluginInfo]]]
    _providers: dict[int, Provider]
    _load_problems: list[LoadProblem]
    disabled: list[Provider]

    def _record(self, problem: LoadProblem, cause: BaseException | None = None) -> None:
        """Keep a third-party plugin's problem; raise a built-in's (that is a bug of latentbridge)."""
        if problem.provider is not None and problem.provider.builtin:
            raise PluginError(problem.message) from cause
        self._load_problems.append(problem)

    def add_plugin(self, plugin: object, name: str | None = None, dist: md.Distribution | None = None) -> None:
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        provider = provider_for(plugin, name, dist)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            self._record(LoadProblem("invalid-plugin", f"plugin {provider}: {flat(exc)}", None, name, provider))
            return
        except ValueError as exc:  # already registered under that name
            message = f"plugin {provider} could not be registered: {str(exc).splitlines()[0]}"
            self._record(LoadProblem("invalid-plugin", message, None, name, provider))
            return
        self._providers[id(plugin)] = provider

    def add_entry_points(self) -> None:
        disabled, warning = disabled_distributions()
        if warning:
            log.warning("warning: %s", warning)
            self._load_problems.append(LoadProblem("bad-setting", warning))
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = (dist.metadata["Name"] if dist is not None else None) or "(unknown distribution)"
            version = dist.version if dist is not None else "-"
            module = getattr(ep, "module", None) or ep.name
            if normalize_distribution(dist_name) in disabled:
                self.disabled.append(Provider(module, dist_name, version))
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must name itself, and only itself
                message = f"plugin '{ep.name}' ({dist_name} {version}) failed to load: {one_line(exc)}"
                self._record(LoadProblem("import-error", message, None, ep.name, Provider(module, dist_name, version)), exc)
                continue
            if self.pm.is_registered(plugin):
                continue  # the same module named by a second entry point: nothing new
            name = ep.name
            if self.pm.get_plugin(name) is not None:  # two distributions with the same entry point name
                name = f"{ep.name} ({dist_name})"
            self.add_plugin(plugin, name=name, dist=dist)

    # -- the register_* hooks ----------------------------------------------------------------------

    def collect(self) -> None:
        """Call each plugin's ``register_*`` hooks, one plugin at a time, after checking for unknown hooks."""
        self._check_hook_names()
        for impl in getattr(self.pm.hook, QUANTITY_HOOK).get_hookimpls():
            provider = self._providers[id(impl.plugin)]
            try:
                impl.function(register=lambda quantity, provider=provider: self.register_quantity(quantity, provider))
            except Exception as exc:
                if isinstance(exc, PluginError) and provider.builtin:
                    raise
                message = f"plugin {provider} raised in {QUANTITY_HOOK}: {one_line(exc)}"
                self._record(LoadProblem("hook-error", message, "quantity", impl.plugin_name, provider), exc)
        for kind, spec in KINDS.items():
            caller = getattr(self.pm.hook, spec.hook)
            for impl in caller.get_hookimpls():  # registration order
                provider = self._providers[id(impl.plugin)]
                try:
                    impl.function(register=self._register_function(kind, provider))
                except Exception as exc:
                    if isinstance(exc, PluginError) and provider.builtin:
                        raise
                    message = f"plugin {provider} raised in {spec.hook}: {one_line(exc)}"
                    self._record(LoadProblem("hook-error", message, kind, impl.plugin_name, provider), exc)

    def _check_hook_names(self) -> None:
        hooks = {name: caller for name, caller in vars(self.pm.hook).items() if not name.startswith("_")}
        known = sorted(name for name, caller in hooks.items() if caller.has_spec())
        for name, caller in hooks.items():
            if caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                provider = self._providers.get(id(impl.plugin)) or provider_for(impl.plugin, impl.plugin_name, None)
                hint = did_you_mean(name, known) or f" (the hooks are {', '.join(known)})"
                message = f"plugin {provider}: unknown hook '{name}'{hint}; it is never called"
                self._record(LoadProblem("unknown-hook", message, None, impl.plugin_name, provider))

    def _register_function(self, kind: str, provider: Provider):
        spec = KINDS[kind]

        def register(cls: type) -> None:
            self.register(kind, cls, provider)

        register.__doc__ = f"Register one {spec.words} class."
        return register

    def _class_problem(self, kind: str, cls: type, provider: Provider) -> str | None:
        spec = KINDS[kind]
        if not (inspect.isclass(cls) and issubclass(cls, spec.base)):
            return f"plugin {provider}: {spec.hook} got {cls!r}, which is not a subclass of {spec.base.__name__}"
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not NAME_RE.match(name):
            return (f"plugin {provider}: {spec.words} class {cls.__name__} needs a class attribute `name` "
                    f"of lowercase letters, digits and underscores, got {name!r}")
        config = getattr(cls, "Config", None)
        if not (inspect.isclass(config) and dataclasses.is_dataclass(config) and issubclass(config, spec.config_base)):
            return (f"plugin {provider}: {spec.words} '{name}' needs `Config`, a dataclass subclass of "
                    f"{spec.config_base.__name__}")
        if kind == "system":
            return _system_problem(cls, name, provider)
        return None

    def register_quantity(self, quantity: StepQuantity, provider: Provider) -> None:
        """Check one shared step quantity and add it; a name two providers register is left out (ambiguous)."""
        name = getattr(quantity, "name", None)
        if not (isinstance(quantity, StepQuantity) and isinstance(name, str) and NAME_RE.match(name)
                and callable(quantity.compute) and isinstance(quantity.help, str)):
            message = (f"plugin {provider}: {QUANTITY_HOOK} got {quantity!r}; register "
                       "StepQuantity(name, compute, help) with a lowercase identifier as the name")
            self._record(LoadProblem("invalid-class", message, "quantity", name if isinstance(name, str) else None,
                                     provider))
            return
        existing = self._quantities.setdefault(name, [])
        if provider.builtin and any(p.builtin for _, p in existing):
            raise PluginError(f"step quantity '{name}' is registered twice by latentbridge")
        existing.append((quantity, provider))

    def register(self, kind: str, cls: type, provider: Provider) -> None:
        """Check one class and add it; a name already taken by another provider becomes ambiguous."""
        spec = KINDS[kind]
        problem = self._class_problem(kind, cls, provider)
        name = getattr(cls, "name", None)
        if problem is not None:
            self._record(LoadProblem("invalid-class", problem, kind, name if isinstance(name, str) else None, provider))
            return
        existing = self._entries[kind].setdefault(name, [])
        builtin = next((e for e in existing if e.provider.builtin), None)
        if provider.builtin and builtin is not None:
            raise PluginError(f"{spec.words} '{name}' is registered twice: by {builtin.provider} and by {provider}")
        if any(e.cls is cls and e.provider == provider for e in existing):
            message = (f"plugin {provider}: {spec.words} '{name}' is registered twice: by {provider} "
                       f"and by {provider}; the second registration is ignored")
            self._record(LoadProblem("invalid-class", message, kind, name, provider))
            return
        existing.append(PluginInfo(kind, name, cls, provider))
        if len(existing) > 1:
            existing[:] = [dataclasses.replace(e, status="ambiguous") for e in existing]


def _system_problem(cls: type, name: str, provider: Provider) -> str | None:
    """An evaluation system's own rules: a name that no record field already uses, and a known role."""
    if name in RESERVED_NAMES:
        return (f"plugin {provider}: evaluation system '{name}' takes a name the evaluation records already use "
                f"(reserved: {', '.join(sorted(RESERVED_NAMES))})")
    if getattr(cls, "role", None) not in ROLES:
        return f"plugin {provider}: evaluation system '{name}' needs `role`, one of {', '.join(ROLES)}, got {cls.role!r}"
    return None
