"""Commands for recipes: validate, ls, cp."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import OVERRIDES_HELP, app, console, err_console
from latentbridge.config.catalog import copy_recipe, shipped_recipes


@app.command("validate")
def validate(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe (all defaults filled in)."),
    estimate: bool = typer.Option(False, "--estimate", help="Then load the models and measure a few training "
                                  "steps: parameters, memory, seconds per step, the training's time."),
    estimate_steps: int = typer.Option(3, "--estimate-steps", help="Steps the --estimate probe measures (after one "
                                       "warm-up step)."),
) -> None:
    """Check a recipe (and overrides) against the schema, the plugins and the model folders' config.json,
    without loading any weight; with --estimate, then measure what it costs."""
    from latentbridge.bridge.facts import check_against_models
    from latentbridge.config.recipe import load_recipe
    from latentbridge.errors import LatentBridgeError

    if estimate_steps < 1:
        raise LatentBridgeError(f"--estimate-steps must be at least 1, got {estimate_steps}")
    resolved = load_recipe(recipe, overrides or [])
    check_against_models(resolved)
    if show:
        typer.echo(resolved.to_yaml(), nl=False)
    else:
        console.print(f"[green]ok[/]: {escape(recipe)} is a valid recipe ('{escape(resolved.name)}')")
    if estimate:
        from latentbridge.train.estimate import describe
        from latentbridge.train.estimate import estimate as measure

        found = measure(resolved, estimate_steps, log=lambda line: err_console.print(f"[dim]{escape(line)}[/]"))
        measured = f"from {found.probe_steps} measured steps" if found.probe_steps else "no training step"
        table = Table(title=f"estimate for '{escape(resolved.name)}' on {found.device}, {measured}")
        table.add_column("what")
        table.add_column("measured", overflow="fold")
        for what, figure in describe(found):
            table.add_row(what, escape(figure))
        (err_console if show else console).print(table)  # with --show, stdout holds the recipe alone


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
