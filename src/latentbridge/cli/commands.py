"""Commands for plugins and recipes: list-plugins, describe, validate, ls, cp."""

from __future__ import annotations

import json
from dataclasses import MISSING

import typer
from rich.markup import escape
from rich.table import Table

from ..catalog import copy_recipe, shipped_recipes
from ..configs import config_fields, show_value
from ..errors import LatentBridgeError
from ..registry import KINDS, get_registry
from .app import app, console

OVERRIDES_HELP = "Overrides: key.path=value (value read as YAML) or ~key.path to delete a key."


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
        from ..configs import did_you_mean

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


@app.command("validate")
def validate(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe (all defaults filled in)."),
) -> None:
    """Check a recipe (and overrides) against the schema and the plugins, without loading any model."""
    from ..models import resolve_model_path
    from ..recipe import load_recipe

    resolved = load_recipe(recipe, overrides or [])
    for model in (resolved.models.source, resolved.models.target):
        resolve_model_path(model)  # the folder must exist (nothing is loaded)
    if show:
        typer.echo(resolved.to_yaml(), nl=False)
    else:
        console.print(f"[green]ok[/]: {escape(recipe)} is a valid recipe ('{escape(resolved.name)}')")


@app.command("ls")
def list_recipes(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List the recipes shipped with latentbridge."""
    recipes = shipped_recipes()
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "description": r.description} for r in recipes], indent=2))
        return
    table = Table(title="shipped recipes (copy one out with `latentbridge cp NAME DEST`)")
    table.add_column("name")
    table.add_column("description", overflow="fold")
    for r in recipes:
        table.add_row(r.name, escape(r.description))
    console.print(table)


@app.command("cp")
def copy(
    name: str = typer.Argument(..., help="Name of a shipped recipe (see `latentbridge ls`)."),
    dest: str = typer.Argument(..., help="Destination file, or a folder to put NAME.yaml in."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a shipped recipe out to edit it."""
    target = copy_recipe(name, dest, force=force)
    console.print(f"copied {escape(name)} to {escape(str(target))}")
