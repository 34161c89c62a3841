"""Commands for recipes: validate, ls, cp."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import OVERRIDES_HELP, app, console
from latentbridge.config.catalog import copy_recipe, shipped_recipes


@app.command("validate")
def validate(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe (all defaults filled in)."),
) -> None:
    """Check a recipe (and overrides) against the schema, the plugins and the model folders' config.json,
    without loading any weight."""
    from latentbridge.bridge.facts import check_against_models
    from latentbridge.config.recipe import load_recipe

    resolved = load_recipe(recipe, overrides or [])
    check_against_models(resolved)
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
