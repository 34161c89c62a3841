"""Experiment reports generated from run folders: the table, learning curves and the differences.

Every number comes from the run folders (``recipe.yaml``, ``summary.json``, ``metrics.jsonl``,
``eval_samples_step_<N>.jsonl``); nothing is typed by hand. Curves need matplotlib
(``pip install latentbridge[report]``); without it the report says so and keeps the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LatentBridgeError
from .eval.stats import sign_flip_exact
from .eval.summary import SYSTEMS, read_records
from .recipe import parse_yaml

IGNORED_KEYS = ("run_dir",)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


@dataclass
class RunRecord:
    """What a report needs from one run folder."""

    folder: Path
    recipe: dict[str, Any]
    evaluations: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    status: str
    sample: str | None = None
    final_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def name(self) -> str:
        return str(self.recipe.get("name"))

    def accuracy(self, evaluation: dict[str, Any], system: str) -> float | None:
        s = evaluation["systems"].get(system)
        return None if s is None else s["accuracy"]

    @property
    def final(self) -> dict[str, Any]:
        return self.evaluations[-1]

    @property
    def peak(self) -> dict[str, Any]:
        """The evaluation with the best bridged accuracy (the earliest on ties)."""
        return max(self.evaluations, key=lambda e: (self.accuracy(e, "bridged") or -1.0, -e["step"]))


def load_run(folder: str | Path) -> RunRecord:
    folder = Path(folder)
    if not is_run_folder(folder):
        raise LatentBridgeError(f"{folder} is not a run folder with evaluations (no recipe.yaml or summary.json)")
    recipe = parse_yaml((folder / "recipe.yaml").read_text(), str(folder / "recipe.yaml"))
    summary = json.loads((folder / "summary.json").read_text())
    if not summary.get("evaluations"):
        raise LatentBridgeError(f"{folder}: summary.json holds no evaluation yet")
    metrics_path = folder / "metrics.jsonl"
    metrics = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()] if metrics_path.is_file() else []
    status = "unknown"
    if (folder / "run.json").is_file():
        status = json.loads((folder / "run.json").read_text()).get("status", "unknown")
    run = RunRecord(folder, recipe, summary["evaluations"], metrics, status)
    final_file = folder / f"eval_samples_step_{run.final['step']}.jsonl"
    if final_file.is_file():
        run.final_records = read_records(final_file)
        run.sample = next((r["bridged_full"] for r in run.final_records if r.get("bridged_full") is not None), None)
    return run


MISSING = "<absent>"


def _subtree(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def differences(runs: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Resolved-recipe keys whose values differ between the runs. A block that some runs lack
    altogether (an objective an ablation removed) is one entry: its settings, or absent."""
    recipes = [{k: v for k, v in r.recipe.items() if k not in IGNORED_KEYS} for r in runs]
    flat = [flatten(r) for r in recipes]
    keys = sorted(set().union(*flat))
    out: dict[str, list[Any]] = {}
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if len({json.dumps(v) for v in values}) == 1:
            continue
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):  # the shortest block some run lacks entirely
            prefix = ".".join(parts[:depth])
            if any(_subtree(r, prefix) == MISSING for r in recipes):
                out[prefix] = [_subtree(r, prefix) for r in recipes]
                break
        else:
            out[key] = values
    return out


def _shorten_key(key: str) -> str:
    return key.replace("objectives.", "obj.").replace("translator.", "tr.")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cell(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_settings(run: RunRecord, diff: dict[str, list[Any]], index: int, limit: int = 4) -> str:
    """The few settings that differ between the runs, for the table's config column."""
    items = []
    for key, values in diff.items():
        if key in ("name", "seed"):
            continue
        value, short = values[index], _shorten_key(key)
        if value == MISSING:
            items.append(f"no {short}")
        elif isinstance(value, dict) and MISSING in values:
            items.append(f"with {short}")
        else:
            items.append(f"{short}={value if isinstance(value, str) else json.dumps(value)}")
    text = ", ".join(items[:limit]) + (", …" if len(items) > limit else "")
    return text or "-"


def experiment_table(runs: Sequence[RunRecord]) -> list[str]:
    diff = differences(runs)
    header = ("run id", "recipe", "settings", "seed", "bridged peak (step) → final", "source", "target", "relay",
              "invalid", "collapse", "sample bridged output")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, run in enumerate(runs):
        peak, final = run.peak, run.final
        bridged = final["systems"]["bridged"]
        row = (
            f"`{run.run_id}`", run.name, run_settings(run, diff, i), str(run.recipe.get("seed")),
            f"{_fmt(run.accuracy(peak, 'bridged'))} ({peak['step']}) → {_fmt(run.accuracy(final, 'bridged'))}",
            _fmt(run.accuracy(final, "source")), _fmt(run.accuracy(final, "target")), _fmt(run.accuracy(final, "relay")),
            str(bridged["invalid"]), "yes" if bridged["collapsed"] else "no", _cell(run.sample),
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def differences_section(runs: Sequence[RunRecord]) -> list[str]:
    diff = differences(runs)
    if not diff:
        return ["The runs' resolved recipes are identical (apart from where they were written)."]
    lines = ["| key | " + " | ".join(f"`{r.run_id}`" for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for key, values in diff.items():
        lines.append(f"| `{key}` | " + " | ".join("absent" if v == MISSING else f"`{json.dumps(v)}`" for v in values) + " |")
    return lines


# -- groups of seeds ----------------------------------------------------------------------------------

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_critical(df: int) -> float:
    """Two-sided 95% Student-t critical value (table, rounded down to the nearest listed df)."""
    if df <= 0:
        return math.nan
    usable = [d for d in _T95 if d <= df]
    return _T95[max(usable)] if df <= 30 else 1.960


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval over seeds (nan with one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_critical(n - 1) * sd / math.sqrt(n)


def group_table(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Mean ± 95% interval over seeds per configuration, and a paired test of each configuration
    against the first: per item, correct answers summed over the seeds both have, then an exact
    sign-flip test over items (items are the unit; see :func:`sign_flip_exact`)."""
    names = list(groups)
    first = groups[names[0]]
    header = ("configuration", "seeds", "bridged final", "bridged peak", "distinct answers", "collapsed runs",
              f"vs {names[0]}: difference, p")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        runs = groups[name]
        finals = [r.accuracy(r.final, "bridged") for r in runs]
        peaks = [r.accuracy(r.peak, "bridged") for r in runs]
        distinct = [r.final["systems"]["bridged"]["distinct"] for r in runs]
        collapsed = sum(r.final["systems"]["bridged"]["collapsed"] for r in runs)
        test = "-" if name == names[0] else paired_test_cell(runs, first)
        lines.append("| " + " | ".join((
            name, str(len(runs)), format_mean_interval(finals), format_mean_interval(peaks),
            f"{sum(distinct) / len(distinct):.1f}", f"{collapsed}/{len(runs)}", test)) + " |")
    return lines


def format_mean_interval(values: Sequence[float]) -> str:
    """``mean ± half-width`` of the 95% interval over seeds; the mean alone with one seed."""
    mean, half = mean_interval(values)
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def paired_test_cell(runs: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> str:
    """``+0.018, p = 0.259``: final bridged accuracy of ``runs`` minus ``baseline`` over their shared
    seeds, and the exact sign-flip p over items; ``-`` when they share no scored item."""
    differences, seeds = paired_differences(runs, baseline)
    if not differences:
        return "-"
    return f"{sum(differences) / (len(differences) * seeds):+.3f}, p = {sign_flip_exact(differences):.3g}"


def paired_differences(runs: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> tuple[list[int], int]:
    """Per item of the final evaluations: bridged correct answers of ``runs`` minus those of
    ``baseline``, summed over the seeds both have; and the number of those seeds. An item counts
    only when every shared seed scored it in both."""
    by_seed = {r.recipe.get("seed"): r for r in baseline}
    pairs = [(run, by_seed[run.recipe.get("seed")]) for run in runs if run.recipe.get("seed") in by_seed]
    totals: dict[str, int] = {}
    seen: dict[str, int] = {}
    for run, other in pairs:
        theirs = {r["id"]: r["bridged_correct"] for r in other.final_records}
        for record in run.final_records:
            mine, their = record["bridged_correct"], theirs.get(record["id"])
            if mine is None or their is None:
                continue
            totals[record["id"]] = totals.get(record["id"], 0) + int(mine) - int(their)
            seen[record["id"]] = seen.get(record["id"], 0) + 1
    return [totals[i] for i in totals if seen[i] == len(pairs)], len(pairs)


# -- curves and the document --------------------------------------------------------------------------


def plot_curves(run: RunRecord, path: Path) -> bool:
    """Accuracy per system and every loss term against step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [e["step"] for e in run.evaluations]
    for system in SYSTEMS:
        values = [run.accuracy(e, system) for e in run.evaluations]
        if any(v is not None for v in values):
            ax_acc.plot(steps, values, marker="o", label=system)
    ax_acc.set(xlabel="step", ylabel="accuracy", title=f"{run.run_id}: accuracy", ylim=(0, 1))
    ax_acc.legend()
    terms = sorted({k for m in run.metrics for k in m if k.startswith("loss/")})
    for key in ["loss", *terms]:
        points = [(m["step"], m[key]) for m in run.metrics if m.get(key) is not None]
        if points:
            ax_loss.plot(*zip(*points, strict=True), label=key)
    ax_loss.set(xlabel="step", ylabel="loss (unweighted terms)", title="training losses")
    ax_loss.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def is_run_folder(folder: Path) -> bool:
    return (folder / "recipe.yaml").is_file() and (folder / "summary.json").is_file()


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders from the given paths: a folder that is not a run but holds runs (a sweep folder,
    ``runs/``) stands for the runs in it that have evaluations."""
    folders: list[Path] = []
    for path in map(Path, paths):
        inner = sorted(p for p in path.iterdir() if p.is_dir() and is_run_folder(p)) if path.is_dir() else []
        if is_run_folder(path) or not inner:
            folders.append(path)  # a run, or a bad folder that load_run reports
        else:
            folders += inner
    return folders


def seed_groups(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Folders by configuration: ``<name>-seed<N>`` runs group under ``<name>``, any other folder alone."""
    groups: dict[str, list[Path]] = {}
    for folder in folders:
        name, sep, seed = folder.name.rpartition("-seed")
        groups.setdefault(name if sep and seed.isdigit() else folder.name, []).append(folder)
    return groups


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
