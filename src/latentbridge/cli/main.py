"""The entry point: the application with every command registered."""

from __future__ import annotations

import sys

from latentbridge.cli import c2c, cache, lm_eval, plugins, recipes, report, run, runs, sweep, zoo  # noqa: F401  (each registers its commands)
from latentbridge.cli.app import app, err_console


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
