"""Reading run folders for reports: one run's recipe, evaluations, metrics; folders grouped by seed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentbridge.config.yamlio import parse_yaml
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.summary import read_records


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


def is_run_folder(folder: Path) -> bool:
    return (folder / "recipe.yaml").is_file() and (folder / "summary.json").is_file()


def expand_run_dirs(paths: Sequence[str | Path], exclude: Sequence[str | Path] = ()) -> list[Path]:
    """Run folders from the given paths: a folder that is not a run but holds runs (a sweep folder,
    ``runs/``) stands for the runs in it that have evaluations, less the ``exclude`` folders (the
    report's own folder)."""
    skip = {Path(p).resolve() for p in exclude}
    folders: list[Path] = []
    for path in map(Path, paths):
        inner = sorted(p for p in path.iterdir() if p.is_dir() and is_run_folder(p) and p.resolve() not in skip
                       ) if path.is_dir() else []
        if is_run_folder(path) or not inner:
            folders.append(path)  # a run, or a bad folder that load_run reports
        else:
            folders += inner
    return folders


def report_folder(paths: Sequence[str | Path]) -> Path:
    """Where a report of ``paths`` goes by default: ``<folder>/report`` for one folder (a run, or a
    folder holding runs), ``<common parent>/report`` for several; several folders with no common
    parent but the file-system root need ``--out``."""
    if len(paths) == 1:
        return Path(paths[0]) / "report"
    common = Path(os.path.commonpath([Path(p).absolute() for p in paths]))
    if common.parent == common:
        raise LatentBridgeError(
            f"{', '.join(map(str, paths))}: these folders share no parent folder to put the report in; "
            "say where it goes with --out")
    return common / "report"


def seed_groups(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Folders by configuration: ``<name>-seed<N>`` runs group under ``<name>``, any other folder alone."""
    groups: dict[str, list[Path]] = {}
    for folder in folders:
        name, sep, seed = folder.name.rpartition("-seed")
        groups.setdefault(name if sep and seed.isdigit() else folder.name, []).append(folder)
    return groups
