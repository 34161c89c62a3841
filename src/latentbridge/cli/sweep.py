"""``latentbridge sweep``: every combination and seed of some recipes, then the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from latentbridge.cli.app import app, console
from latentbridge.cli.ui import RunDisplay
from latentbridge.errors import LatentBridgeError


@app.command("sweep")
def sweep(
    recipes_and_overrides: list[str] = typer.Argument(
        ..., help="One or more recipes (each a configuration), then overrides key=value for every run."),
    grid: list[str] = typer.Option(None, "--grid", help="key=v1,v2,...: one axis of the grid (repeatable)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds 0..N-1 for every configuration."),
    out: Path = typer.Option(None, "--out", help="Sweep folder (default: runs/sweeps/<first recipe>)."),
) -> None:
    """Run every combination and seed in sequence (finished runs are skipped, unfinished ones resumed),
    then write a report with mean ± 95% interval over seeds and a paired test against the first."""
    from latentbridge.train.sweep import run_sweep, train_one

    overrides = [a for a in recipes_and_overrides if "=" in a or a.startswith("~")]
    recipes = [a for a in recipes_and_overrides if a not in overrides]
    if not recipes:
        raise LatentBridgeError("sweep: name at least one recipe")
    out = out or Path("runs") / "sweeps" / Path(recipes[0]).stem

    def run_one(recipe: str, run_overrides: list[str], folder: Path, resume: bool) -> None:
        with RunDisplay(console) as display:
            train_one(recipe, run_overrides, folder, resume, consumers=[display], log=display.log)

    path, _ = run_sweep(recipes, grid or [], seeds, out, overrides, run_one, log=console.print)
    console.print(f"report written to {escape(str(path))}")
