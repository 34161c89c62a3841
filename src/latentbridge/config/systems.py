"""A recipe's evaluation systems checked against the registry: names, settings, and what each can serve."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from latentbridge.config.schema import show_value
from latentbridge.registry.host import Registry


def in_record_order(names: Iterable[str], registry: Registry) -> list[str]:
    """Registered system names in the order records and tables give them: by ``rank``, then by name."""
    return sorted(names, key=lambda n: (registry.get("system", n, "eval.systems").cls.rank, n))


def default_systems() -> list[str]:
    """The built-in systems marked ``default``, in record order: what a recipe evaluates unless it lists
    ``eval.systems`` (a third-party plugin never changes what other runs evaluate)."""
    from latentbridge.registry.host import get_registry

    registry = get_registry()
    return in_record_order((n for n in registry.names("system") if registry.get("system", n).cls.default
                            and registry.get("system", n).provider.builtin), registry)


def system_problems(evaluation: Any, recipe: Mapping[str, Any], registry: Registry) -> list[str]:
    """Every problem with ``eval.systems`` and ``eval.system_config``: unknown or repeated names (with a
    did-you-mean), settings that fail a system's config, and a system's own refusal of this recipe
    (:meth:`~latentbridge.api.system.System.problems`), each one line with its key path."""
    if evaluation is None:
        return []
    problems: list[str] = []
    known: list[str] = []
    for i, name in enumerate(evaluation.systems):
        if name not in registry.names("system"):
            problems.append(registry.unknown_message("system", name, f"eval.systems[{i}]"))
        elif name in known:
            problems.append(f"eval.systems[{i}]: '{name}' is listed twice")
        else:
            known.append(name)
    configs: dict[str, Any] = {}
    for name, block in (evaluation.system_config or {}).items():
        path = f"eval.system_config.{name}"
        if block is not None and not isinstance(block, Mapping):
            problems.append(f"{path}: expected a mapping of settings, got {show_value(block)}")
            continue
        config = registry.parse_config("system", str(name), block or {}, path, problems)
        if config is not None:
            configs[str(name)] = config
    for name in known:
        cls = registry.get("system", name).cls
        system = cls(configs.get(name))
        problems.extend(f"eval.systems: '{name}' {line}" for line in system.problems(recipe))
    return problems
