"""The Typer application, its error handling and the global ``--debug`` switch."""

from __future__ import annotations

import os

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from latentbridge.errors import LatentBridgeError

EXIT_USER_ERROR = 2

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class _State:
    debug: bool = os.environ.get("LATENTBRIDGE_DEBUG", "").lower() in {"1", "true", "yes"}


state = _State()


def report_error(exc: LatentBridgeError) -> None:
    lines = str(exc).splitlines() or [type(exc).__name__]
    err_console.print(f"[bold red]error:[/] {escape(lines[0])}", highlight=False, soft_wrap=True)
    for line in lines[1:]:
        err_console.print(escape(line), highlight=False, soft_wrap=True)


class ErrorHandlingGroup(TyperGroup):
    """Turns user errors raised by any command into one message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LatentBridgeError as exc:
            if state.debug:
                raise
            report_error(exc)
            raise typer.Exit(EXIT_USER_ERROR) from None


app = typer.Typer(
    name="latentbridge",
    cls=ErrorHandlingGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    help="Train and evaluate translators that let one frozen LLM talk to another through soft tokens.",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    if debug:
        state.debug = True


OVERRIDES_HELP = "Overrides: key.path=value (value read as YAML) or ~key.path to delete a key."
