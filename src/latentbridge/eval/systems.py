"""System names and roles, from the plugin registry (the systems themselves: ``plugins/systems/``).

``SYSTEMS`` keeps its old meaning for code written against it: the six systems every evaluation file has
held from the start (``always_recorded``), in record order. New code asks the registry
(:func:`system_role`, ``latentbridge.config.systems.in_record_order``) or reads the systems a file or summary holds
(:func:`latentbridge.eval.summary.systems_in`).
"""

from __future__ import annotations

from latentbridge.registry.host import get_registry

SYSTEMS = ("source", "target", "bridged", "shuffled", "null", "relay")


def system_role(name: str) -> str | None:
    """``baseline``, ``bridged`` or ``control``; None for a name no installed plugin registers (a file
    written with a plugin that is gone)."""
    registry = get_registry()
    return registry.get("system", name).cls.role if name in registry.names("system") else None
