"""The report document: experiment table, over-seeds table, differences and curves in one markdown file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latentbridge.report.curves import plot_curves
from latentbridge.report.runs import load_run
from latentbridge.report.seeds import group_table, paired_table
from latentbridge.report.sizes import plot_sizes
from latentbridge.report.tables import EXPERIMENT_NOTE, differences_section, experiment_table

OVER_SEEDS_NOTE = (
    "Seeds are the unit. Mean ± 95% Student-t interval over seeds of the test accuracy of the dev-chosen "
    "best weights and of the final weights (bridged), of the dev peak, of the shuffled control and of "
    "bridged − shuffled (best weights): the test items held fixed. Beside test: best, its seeds+items 95% "
    "interval: a percentile bootstrap that resamples the seeds and the test items (the same items for every "
    "seed), so it also says what another sample of items would move the figure by; with few seeds its seed "
    "part is too narrow, so where it is narrower than the t interval the seeds, not the items, dominate.")
PAIRED_NOTE = (
    "Each configuration against {first}, paired by seed: per seed, its bridged test accuracy minus that of "
    "{first}'s run with the same seed; the mean of those differences, their 95% paired t interval, the "
    "exact two-sided sign-flip p (the share of the 2^n sign patterns of the n differences whose mean is "
    "at least as far from 0) and the paired t p (n − 1 degrees of freedom). Items are not pooled over seeds. "
    "95% seeds+items: the same bootstrap as above over the per-item differences, paired by seed and item.")


def write_report(
    run_dirs: Sequence[str | Path], out: Path, groups: dict[str, list[str | Path]] | None = None,
    title: str = "Experiment report", origin: str | None = None,
) -> Path:
    """Write ``out/report.md`` (and ``out/curves/<run>.png``) for the given run folders; ``origin``
    names where the run folders are kept (said under the title)."""
    runs = [load_run(d) for d in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    where = f" in {origin}" if origin else ""
    count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    lines = [f"# {title}", "", f"{count}; every number below is read from the run folders{where}.", "",
             "## Experiment table", "", *experiment_table(runs), "", EXPERIMENT_NOTE, ""]
    if groups:
        by_folder = {str(Path(r.folder)): r for r in runs}
        grouped = {name: [by_folder[str(Path(d))] for d in dirs] for name, dirs in groups.items()}
        lines += ["## Over seeds", "", OVER_SEEDS_NOTE, "", *group_table(grouped), ""]
        paired = paired_table(grouped)
        if paired:
            lines += ["## Paired over seeds", "", PAIRED_NOTE.format(first=next(iter(grouped))), "", *paired, ""]
    lines += ["## Differences", "", "Resolved-recipe keys that differ between the runs:", "", *differences_section(runs), ""]
    lines += ["## Learning curves", "", "Accuracy per system on dev at every evaluation; the test evaluations of the "
              "final weights (filled markers, at the final step) and of the dev-chosen best weights (stars, at "
              "the best step) are marked.", ""]
    for run in runs:
        png = out / "curves" / f"{run.run_id}.png"
        if plot_curves(run, png):
            lines.append(f"![{run.run_id}](curves/{png.name})")
        else:
            lines.append(f"- `{run.run_id}`: no curve (matplotlib is not installed: `pip install latentbridge[report]`)")
    if plot_sizes(runs, out / "message_size.png"):
        lines += ["", "## Accuracy against message size", "", "Bridged test accuracy (dev-chosen weights, mean over "
                  "seeds) against the bytes per item of the message, one line per translator and injection mode; the "
                  "text relay and the target alone beside.", "", "![accuracy against message size](message_size.png)"]
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
