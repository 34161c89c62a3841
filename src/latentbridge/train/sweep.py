"""Sweeps: every combination of recipes, grid values and seeds, run in sequence and resumable.

Each run gets its own folder ``<out>/<configuration>-seed<N>``; a finished run is skipped, an
unfinished one resumed from its checkpoint, so rerunning the same command continues a killed sweep.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.train.launchers import Cell


@dataclass(frozen=True)
class Configuration:
    name: str
    recipe: str
    overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
    """``a,b,{x: 1, y: 2},[3,4]`` -> the top-level comma-separated values."""
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v]


def parse_grid(spec: str) -> tuple[str, list[str]]:
    key, sep, values = spec.partition("=")
    if not sep or not key.strip() or not split_values(values):
        raise LatentBridgeError(f"--grid {spec!r}: expected key=value1,value2,...")
    return key.strip(), split_values(values)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "run"


def plan(recipes: Sequence[str], grids: Sequence[str], seeds: int) -> list[tuple[Configuration, int]]:
    """Every (configuration, seed): recipes x grid values, seeds 0..N-1; the first is the reference."""
    if seeds < 1:
        raise LatentBridgeError(f"--seeds must be at least 1, got {seeds}")
    axes = [parse_grid(g) for g in grids]
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise LatentBridgeError("--grid: a key appears twice; give all its values in one --grid")
    configurations = []
    for recipe in recipes:
        label = Path(recipe).stem if recipe.endswith(".yaml") else recipe
        for values in itertools.product(*[v for _, v in axes]):
            overrides = tuple(f"{k}={v}" for k, v in zip(keys, values, strict=True))
            name = " ".join([label, *overrides]) if len(recipes) > 1 or not overrides else " ".join(overrides)
            configurations.append(Configuration(name, recipe, overrides))
    return [(c, s) for c in configurations for s in range(seeds)]


def run_folder(out: Path, configuration: Configuration, seed: int) -> Path:
    return out / f"{slug(configuration.name)}-seed{seed}"


def status_of(folder: Path) -> str | None:
    info = folder / "run.json"
    return json.loads(info.read_text()).get("status") if info.is_file() else None


class SweepStopped(Exception):
    """A stop signal ended the sweep: the running cells wrote checkpoints; rerun the same command to continue."""

    def __init__(self, signal_name: str):
        super().__init__(f"{signal_name}: sweep stopped; rerun the same command to continue it")
        self.signal_name = signal_name


def sweep_cells(recipes: Sequence[str], grids: Sequence[str], seeds: int, out: Path,
                overrides: Sequence[str] = ()) -> list[Cell]:
    """Every cell of the sweep, in order, each with its run folder, whether it resumes, and its log
    (``<out>/logs/<folder name>.log``)."""
    cells = []
    for configuration, seed in plan(recipes, grids, seeds):
        folder = run_folder(out, configuration, seed)
        cells.append(Cell(f"{configuration.name} seed {seed}", configuration.recipe,
                          [*overrides, *configuration.overrides, f"seed={seed}", f"run_dir={folder}"], folder,
                          resume=status_of(folder) not in (None, "finished"), log=out / "logs" / f"{folder.name}.log"))
    return cells


def run_sweep(
    recipes: Sequence[str],
    grids: Sequence[str],
    seeds: int,
    out: Path,
    overrides: Sequence[str] = (),
    run_one: Callable[[str, list[str], Path, bool], None] | None = None,
    log: Callable[[str], None] = print,
    launcher: Any = None,
    outcomes: dict[str, str] | None = None,
) -> tuple[Path, dict[str, list[Path]]]:
    """Run (or skip, or resume) every run of the sweep, then write the report; returns its path and
    the run folders by configuration. ``run_one(recipe, overrides, run_dir, resume)`` trains one run
    in this process (default: :func:`train_one`), one after another; a ``launcher``
    (:class:`~latentbridge.train.launchers.LocalLauncher`, ``SlurmLauncher``) runs them instead. A cell that
    fails does not stop the others; ``outcomes``, when given, gets each cell's (``finished``, ``diverged``,
    ``interrupted``, ``failed``, or ``skipped``: finished before). A stop signal raises :class:`SweepStopped`
    once the running cells have written their checkpoints, before any report."""
    from latentbridge.config.recipe import load_recipe
    from latentbridge.report.document import write_report

    run_one = run_one or (lambda recipe, run_overrides, folder, resume: train_one(recipe, run_overrides, folder, resume, log=log))
    outcomes = {} if outcomes is None else outcomes

    runs = plan(recipes, grids, seeds)
    for configuration, seed in runs:  # every recipe and override is checked before the first run starts
        load_recipe(configuration.recipe, [*overrides, *configuration.overrides, f"seed={seed}"])
    cells = sweep_cells(recipes, grids, seeds, out, overrides)
    groups: dict[str, list[Path]] = {}
    for (configuration, _), cell in zip(runs, cells, strict=True):
        groups.setdefault(configuration.name, []).append(cell.folder)
    todo = []
    for i, cell in enumerate(cells, start=1):
        if status_of(cell.folder) == "finished":
            log(f"[{i}/{len(cells)}] {cell.name}: finished before, skipped")
            outcomes[cell.name] = "skipped"
        else:
            todo.append(cell)
    if launcher is not None:
        outcomes.update(launcher.run(todo))
        if launcher.stopped_by is not None:
            raise SweepStopped(launcher.stopped_by)
    else:
        _run_here(todo, len(cells), run_one, log, outcomes)
    failed = [c for c in cells if outcomes.get(c.name) == "failed"]
    reported = {name: [f for f in fs if status_of(f) == "finished"] for name, fs in groups.items()}
    for name, folders in groups.items():
        for folder in folders:
            if folder not in reported[name]:
                log(f"{folder}: {status_of(folder) or 'not run'}, left out of the report")
    reported = {name: fs for name, fs in reported.items() if fs}
    if not reported:
        raise LatentBridgeError(f"sweep {out}: no run finished, so there is nothing to report"
                                + (f" ({len(failed)} failed: see {out / 'logs'})" if failed else ""))
    groups = reported
    report = write_report([f for fs in groups.values() for f in fs], out / "report", groups=groups,
                          title=f"Sweep: {', '.join(recipes)}" + (f" over {', '.join(grids)}" if grids else "")
                          + f", {seeds} seed{'s' if seeds > 1 else ''}")
    return report, groups


def _run_here(cells: Sequence[Cell], total: int, run_one: Callable[[str, list[str], Path, bool], None],
              log: Callable[[str], None], outcomes: dict[str, str]) -> None:
    """The cells one after another in this process; a cell that raises is logged (its traceback in its
    log file) and the sweep goes on; a stop signal stops it."""
    import traceback

    from latentbridge.train.state import Preempted

    for i, cell in enumerate(cells, start=total - len(cells) + 1):
        log(f"[{i}/{total}] {cell.name}: {'resuming' if cell.resume else 'running'} in {cell.folder}")
        try:
            run_one(cell.recipe, list(cell.overrides), cell.folder, cell.resume)
        except Preempted as stop:
            outcomes[cell.name] = "interrupted"
            raise SweepStopped(stop.signal_name) from None
        except Exception as exc:  # noqa: BLE001  (one cell's failure is the cell's, not the sweep's)
            outcomes[cell.name] = "failed"
            if cell.log is not None:
                cell.log.parent.mkdir(parents=True, exist_ok=True)
                cell.log.write_text(traceback.format_exc())
            log(f"{cell.name}: failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                + (f" (traceback in {cell.log})" if cell.log is not None else "") + "; the sweep goes on")
            continue
        outcomes[cell.name] = "diverged" if status_of(cell.folder) == "stopped" else "finished"


def train_one(
    recipe: str, overrides: Sequence[str], folder: Path, resume: bool, consumers: Sequence[object] = (),
    log: Callable[[str], None] = print,
) -> None:
    """One run of a sweep: a run stopped by non-finite losses is reported and the sweep goes on."""
    from latentbridge.train.jobs import train_recipe
    from latentbridge.train.state import Diverged

    try:
        train_recipe(recipe, overrides, run_dir=folder, resume=resume, consumers=consumers, log=log)
    except Diverged as stop:
        log(f"stopped: {stop} (the sweep goes on)")
