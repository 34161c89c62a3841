"""Commands for many runs: report, sweep, runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import LatentBridgeError
from .app import app, console
from .ui import RunUI


@app.command("report")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run folders to compare; a folder holding runs (a sweep's, runs/) stands for all of them."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.md and curves/."),
) -> None:
    """A markdown report: the experiment table, learning curves (PNG) and the recipe differences;
    runs named NAME-seedN are also compared over seeds."""
    from ..report import expand_run_dirs, seed_groups, write_report

    folders = expand_run_dirs(run_dirs)
    groups = seed_groups(folders)
    path = write_report(folders, out, groups=groups if any(len(g) > 1 for g in groups.values()) else None)
    console.print(f"report written to {escape(str(path))}")


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
    from ..experiment import Experiment
    from ..recipe import load_recipe
    from ..runner import Diverged, Runner
    from ..sweep import run_sweep

    overrides = [a for a in recipes_and_overrides if "=" in a or a.startswith("~")]
    recipes = [a for a in recipes_and_overrides if a not in overrides]
    if not recipes:
        raise LatentBridgeError("sweep: name at least one recipe")
    out = out or Path("runs") / "sweeps" / Path(recipes[0]).stem

    def run_one(recipe: str, run_overrides: list[str], folder: Path, resume: bool) -> None:
        resolved = load_recipe(recipe, run_overrides)
        with RunUI(console) as ui:
            runner = Runner(Experiment.build(resolved, log=ui.log), folder, ui=ui)
            try:
                runner.run(resume=resume)
            except Diverged as stop:
                ui.log(f"stopped: {stop} (the sweep goes on)")

    path, _ = run_sweep(recipes, grid or [], seeds, out, overrides, run_one, log=console.print)
    console.print(f"report written to {escape(str(path))}")


@app.command("runs")
def runs(
    root: Path = typer.Argument(Path("runs"), help="The folder holding the runs and their index.jsonl."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The run index: every run's id, recipe, status and final accuracies."""
    from ..rundir import read_index

    index = read_index(root)
    if as_json:
        typer.echo(json.dumps(list(index.values()), indent=2))
        return
    table = Table(title=f"runs in {escape(str(root))}")
    for column in ("run id", "recipe", "status", "bridged", "target", "source"):
        table.add_column(column, overflow="fold")
    for r in index.values():
        final = r.get("final") or {}
        table.add_row(r["run_id"], r["recipe"], r["status"],
                      *[f"{final[s]:.3f}" if final.get(s) is not None else "-" for s in ("bridged", "target", "source")])
    console.print(table if index else f"no runs indexed in {escape(str(root))}")
