"""Commands for many runs: report, sweep, runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from latentbridge.cli.app import app, console


@app.command("report")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run folders to compare; a folder holding runs (a sweep's, runs/) stands for all of them."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.md and curves/."),
) -> None:
    """A markdown report: the experiment table, learning curves (PNG) and the recipe differences;
    runs named NAME-seedN are also compared over seeds."""
    from latentbridge.report.document import write_report
    from latentbridge.report.runs import expand_run_dirs, seed_groups

    folders = expand_run_dirs(run_dirs)
    groups = seed_groups(folders)
    path = write_report(folders, out, groups=groups if any(len(g) > 1 for g in groups.values()) else None)
    console.print(f"report written to {escape(str(path))}")
