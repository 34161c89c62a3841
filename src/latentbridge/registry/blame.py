"""Blaming a plugin: an unexpected exception from plugin code names the plugin and its distribution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from latentbridge.errors import LatentBridgeError, PluginError


@contextmanager
def blame(kind: str, name: str, plugin: object) -> Iterator[None]:
    """Report an unexpected exception from plugin code with the plugin's name and distribution.

    Errors the user can fix (:class:`LatentBridgeError`) pass through unchanged; the original exception
    stays chained, so ``--debug`` shows where it came from.
    """
    try:
        yield
    except (LatentBridgeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        provider = getattr(plugin, "provider", None) or "an unknown provider"
        raise PluginError(f"{kind} '{name}' from {provider} raised {type(exc).__name__}: {exc}") from exc
