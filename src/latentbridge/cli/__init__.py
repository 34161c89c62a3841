"""The ``latentbridge`` command line (Typer): thin commands over the library.

Errors a user can cause (:class:`~latentbridge.errors.LatentBridgeError`) are printed as one clear
line on stderr with exit code 2; ``latentbridge --debug ...`` (or ``LATENTBRIDGE_DEBUG=1``) shows the
traceback instead.
"""

from latentbridge.cli.main import app, main

__all__ = ["app", "main"]
