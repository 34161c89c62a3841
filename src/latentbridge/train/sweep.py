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

from latentbridge.errors import LatentBridgeError


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


def run_sweep(
    recipes: Sequence[str],
    grids: Sequence[str],
    seeds: int,
    out: Path,
    overrides: Sequence[str] = (),
    run_one: Callable[[str, list[str], Path, bool], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, list[Path]]]:
    """Run (or skip, or resume) every run of the sweep, then write the report; returns its path and
    the run folders by configuration. ``run_one(recipe, overrides, run_dir, resume)`` trains one run
    (default: :func:`train_one`)."""
    from latentbridge.config.recipe import load_recipe
    from latentbridge.report.document import write_report

    run_one = run_one or (lambda recipe, run_overrides, folder, resume: train_one(recipe, run_overrides, folder, resume, log=log))

    runs = plan(recipes, grids, seeds)
    for configuration, seed in runs:  # every recipe and override is checked before the first run starts
        load_recipe(configuration.recipe, [*overrides, *configuration.overrides, f"seed={seed}"])
    groups: dict[str, list[Path]] = {}
    for i, (configuration, seed) in enumerate(runs, start=1):
        folder = run_folder(out, configuration, seed)
        groups.setdefault(configuration.name, []).append(folder)
        status = status_of(folder)
        where = f"[{i}/{len(runs)}] {configuration.name} seed {seed}"
        if status == "finished":
            log(f"{where}: finished before, skipped")
            continue
        log(f"{where}: {'resuming' if status else 'running'} in {folder}")
        run_one(configuration.recipe, [*overrides, *configuration.overrides, f"seed={seed}", f"run_dir={folder}"],
                folder, status is not None)
    reported = {name: [f for f in fs if status_of(f) == "finished"] for name, fs in groups.items()}
    for name, folders in groups.items():
        for folder in folders:
            if folder not in reported[name]:
                log(f"{folder}: {status_of(folder) or 'not run'}, left out of the report")
    reported = {name: fs for name, fs in reported.items() if fs}
    if not reported:
        raise LatentBridgeError(f"sweep {out}: no run finished, so there is nothing to report")
    groups = reported
    report = write_report([f for fs in groups.values() for f in fs], out / "report", groups=groups,
                          title=f"Sweep: {', '.join(recipes)}" + (f" over {', '.join(grids)}" if grids else "")
                          + f", {seeds} seed{'s' if seeds > 1 else ''}")
    return report, groups


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
