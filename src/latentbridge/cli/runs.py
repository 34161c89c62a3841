"""``latentbridge runs``: the run index."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import app, console


@app.command("runs")
def runs(
    root: Path = typer.Argument(Path("runs"), help="The folder holding the runs and their index.jsonl."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The run index: every run's id, recipe, status and final accuracies."""
    from latentbridge.io.rundir import read_index

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
