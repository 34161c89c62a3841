"""The report document: experiment table, over-seeds table, differences and curves in one markdown file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latentbridge.report.curves import plot_curves
from latentbridge.report.runs import load_run
from latentbridge.report.seeds import group_table
from latentbridge.report.tables import differences_section, experiment_table


def write_report(
    run_dirs: Sequence[str | Path], out: Path, groups: dict[str, list[str | Path]] | None = None, title: str = "Experiment report"
) -> Path:
    """Write ``out/report.md`` (and ``out/curves/<run>.png``) for the given run folders."""
    runs = [load_run(d) for d in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"{len(runs)} runs; every number below is read from the run folders.", "",
             "## Experiment table", "", *experiment_table(runs), "",
             "The peak is the best of the evaluations on these same test items (the way `best/` is chosen), "
             "so it is optimistic; the final evaluation is the unbiased figure.", ""]
    if groups:
        by_folder = {str(Path(r.folder)): r for r in runs}
        grouped = {name: [by_folder[str(Path(d))] for d in dirs] for name, dirs in groups.items()}
        lines += ["## Over seeds", "", "Mean ± 95% interval (Student t over seeds) of bridged accuracy. The difference "
                  "is in final bridged accuracy against the first configuration, over the seeds both ran; p is an "
                  "exact paired sign-flip test over items (each item's correct answers summed over those seeds; "
                  "with one seed it is the exact McNemar test).", "",
                  *group_table(grouped), ""]
    lines += ["## Differences", "", "Resolved-recipe keys that differ between the runs:", "", *differences_section(runs), ""]
    lines += ["## Learning curves", ""]
    for run in runs:
        png = out / "curves" / f"{run.run_id}.png"
        if plot_curves(run, png):
            lines.append(f"![{run.run_id}](curves/{png.name})")
        else:
            lines.append(f"- `{run.run_id}`: no curve (matplotlib is not installed: `pip install latentbridge[report]`)")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_runs(paths: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """What ``latentbridge report`` does: the report of run folders (a folder holding runs, such as a
    sweep's, stands for its runs; ``NAME-seedN`` runs are compared over seeds), written into ``out``
    (default: beside the runs, see :func:`~latentbridge.report.runs.report_folder`). Returns report.md."""
    from latentbridge.report.runs import expand_run_dirs, report_folder, seed_groups

    paths = [Path(p) for p in paths]
    out = Path(out) if out is not None else report_folder(paths)
    folders = expand_run_dirs(paths, exclude=[out])
    groups = seed_groups(folders)
    return write_report(folders, out, groups=groups if any(len(g) > 1 for g in groups.values()) else None)
