"""The project's error types.

Every problem a user can cause (a bad recipe, a missing file, a wrong plugin name) raises
:class:`LatentBridgeError`. The CLI prints such errors as one clear line (or, for a recipe, one line
per problem) and exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

from collections.abc import Iterable


class LatentBridgeError(Exception):
    """A problem the user can fix: reported without a traceback, exit code 2."""


class ConfigError(LatentBridgeError):
    """One or more invalid values in a recipe or plugin config, each with its key path.

    ``problems`` holds every problem found, so a user fixes them all in one round.
    """

    def __init__(self, problems: Iterable[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}{where}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class PluginError(LatentBridgeError):
    """A plugin could not be loaded or registered (duplicate names, unknown hooks, import errors)."""


class ShapeError(ValueError):
    """A tensor does not match the shape contract of an interface (a programming error in a plugin)."""
