"""Commands for plugins: list-plugins, describe."""

from __future__ import annotations

import json
from dataclasses import MISSING

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import app, console
from latentbridge.config.schema import config_fields, show_value
from latentbridge.errors import LatentBridgeError
from latentbridge.registry.host import KINDS, get_registry


@app.command("list-plugins")
def list_plugins(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    kind: str = typer.Option(None, "--kind", help="Only this kind: objective, translator, injection or task."),
) -> None:
    """List every registered plugin: kind, name, provider and a one-line description."""
    if kind is not None and kind not in KINDS:
        raise LatentBridgeError(f"--kind: unknown kind '{kind}'; use one of {', '.join(KINDS)}")
    plugins = [p for p in get_registry().all() if kind is None or p.kind == kind]
    if as_json:
        typer.echo(json.dumps([p.as_json() for p in plugins], indent=2))
        return
    table = Table(title="latentbridge plugins")
    for column in ("kind", "name", "distribution", "version", "description"):
        table.add_column(column, overflow="fold")
    for p in plugins:
        table.add_row(p.kind, p.name, p.provider.distribution, p.provider.version, escape(p.description))
    console.print(table)


@app.command("describe")
def describe(
    name: str = typer.Argument(..., help="Plugin name, e.g. nll or linear."),
    kind: str = typer.Option(None, "--kind", help="Disambiguate when several kinds share the name."),
) -> None:
    """Show a plugin's config: every key with its type, default and meaning."""
    registry = get_registry()
    matches = [p for p in registry.all() if p.name == name and (kind is None or p.kind == kind)]
    if not matches:
        every = sorted({p.name for p in registry.all()})
        from latentbridge.config.schema import did_you_mean

        raise LatentBridgeError(f"unknown plugin '{name}'{did_you_mean(name, every)}; see `latentbridge list-plugins`")
    if len(matches) > 1:
        kinds = ", ".join(p.kind for p in matches)
        raise LatentBridgeError(f"'{name}' names several plugins ({kinds}); add --kind")
    info = matches[0]
    console.print(f"[bold]{info.kind} {info.name}[/] from {escape(str(info.provider))}")
    console.print(escape(info.description))
    table = Table(show_header=True)
    for column in ("key", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key, words, default, help_text in config_fields(info.cls.Config):
        shown = "(required)" if default is MISSING else show_value(default)
        table.add_row(key, escape(words), escape(shown), escape(help_text))
    console.print(table)
