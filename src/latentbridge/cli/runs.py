"""``latentbridge runs``: the run index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import app, console
from latentbridge.errors import LatentBridgeError


def overrides_cell(record: dict[str, Any]) -> str:
    """The command-line overrides a run was loaded with, ``-`` for none (and for index lines written
    before runs recorded them); ``run_dir=`` is left out: the run id names the folder already."""
    shown = [o for o in record.get("overrides") or [] if not str(o).startswith("run_dir=")]
    return " ".join(map(str, shown)) or "-"


@app.command("runs")
def runs(
    root: Path = typer.Argument(Path("runs"), help="The folder holding the runs and their index.jsonl."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every run with its list of overrides)."),
) -> None:
    """The run index: every run's id, recipe, the overrides it was run with (less run_dir=), status and
    final accuracies."""
    from latentbridge.io.rundir import read_index

    if not root.is_dir():
        raise LatentBridgeError(f"runs: {root} is not a folder (give the folder holding the runs, e.g. runs/)")
    index = read_index(root)
    if as_json:
        typer.echo(json.dumps([{**r, "overrides": r.get("overrides") or []} for r in index.values()], indent=2))
        return
    table = Table(title=f"runs in {escape(str(root))}")
    for column in ("run id", "recipe", "overrides", "status", "bridged", "target", "source"):
        table.add_column(column, overflow="fold")
    for r in index.values():
        final = r.get("final") or {}
        table.add_row(escape(r["run_id"]), escape(r["recipe"]), escape(overrides_cell(r)), r["status"],
                      *[f"{final[s]:.3f}" if final.get(s) is not None else "-" for s in ("bridged", "target", "source")])
    console.print(table if index else f"no runs indexed in {escape(str(root))}")
