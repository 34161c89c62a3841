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
    out: Path = typer.Option(
        None, "--out", show_default=False,
        help="Folder for report.md and curves/. Default: <FOLDER>/report for one folder (a run, or a folder "
             "holding runs); for several, report/ in their common parent folder (--out is needed when they "
             "share none)."),
) -> None:
    """A markdown report: the experiment table (the dev peak that chose best/, test accuracy of those
    weights and of the final weights, the controls and the information-flow figure), learning curves
    (PNG) and the recipe differences; runs named NAME-seedN are also compared over seeds, the seed
    being the unit. It is written beside the runs (see --out), and its own folder is never taken for
    a run. Run folders of older versions, whose evaluations chose best/ on test, are refused."""
    from latentbridge.report.document import report_runs

    path = report_runs(run_dirs, out)
    console.print(f"report written to {escape(str(path))}")
