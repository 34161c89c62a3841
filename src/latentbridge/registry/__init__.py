"""The plugin registry: built-ins registered explicitly, third parties through entry points."""

from latentbridge.registry.blame import blame
from latentbridge.registry.host import KINDS, PluginInfo, Provider, Registry, get_registry, reset_registry

__all__ = ["KINDS", "PluginInfo", "Provider", "Registry", "blame", "get_registry", "reset_registry"]
