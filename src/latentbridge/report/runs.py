"""Reading run folders for reports: one run's recipe, dev evaluations, test evaluations of the final
and of the dev-chosen best weights, metrics; folders grouped by seed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentbridge.config.yamlio import parse_yaml
from latentbridge.errors import LatentBridgeError


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


OLD_LAYOUT = (
    "{folder}: a run folder of an older latentbridge: its periodic evaluations read the test split and "
    "chose best/ on it (summary.json has no 'test' entry; eval_samples_step_<N>.jsonl). Reports quote test "
    "accuracy only of weights chosen on dev and of the final weights, so this run is not reported: train it "
    "again with this version (`latentbridge summarize {folder}` still summarizes its evaluation files)")


@dataclass
class RunRecord:
    """What a report needs from one run folder: the dev evaluations (selection), the dev-chosen best
    step, and the test evaluations of the final and of the best weights (absent until the run ends)."""

    folder: Path
    recipe: dict[str, Any]
    evaluations: list[dict[str, Any]]  # the periodic evaluations, on dev, in step order
    metrics: list[dict[str, Any]]
    status: str
    best_step: int | None = None
    test: dict[str, dict[str, Any]] = field(default_factory=dict)  # "final", "best": test summaries
    final_step: int | None = None
    stopped_early: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # run.json

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def name(self) -> str:
        return str(self.recipe.get("name"))

    @property
    def seed(self) -> Any:
        return self.recipe.get("seed")

    @staticmethod
    def accuracy(evaluation: dict[str, Any] | None, system: str) -> float | None:
        """A system's accuracy in one evaluation summary; None when it or the system is absent."""
        s = evaluation["systems"].get(system) if evaluation else None
        return None if s is None else s["accuracy"]

    @property
    def dev_peak(self) -> dict[str, Any]:
        """The dev evaluation ``best/`` was chosen at (the best bridged accuracy on dev, earliest on ties)."""
        for evaluation in self.evaluations:
            if evaluation["step"] == self.best_step:
                return evaluation
        return max(self.evaluations, key=lambda e: (self.accuracy(e, "bridged") or -1.0, -e["step"]))

    @property
    def test_best(self) -> dict[str, Any] | None:
        """Test summary of the dev-chosen best weights (None until the run has evaluated it)."""
        return self.test.get("best")

    @property
    def test_final(self) -> dict[str, Any] | None:
        """Test summary of the final weights (None until the run has evaluated it)."""
        return self.test.get("final")

    @property
    def sample(self) -> str | None:
        """The first bridged output on test of the best weights (else of the final weights)."""
        summary = self.test_best or self.test_final
        bridged = summary["systems"].get("bridged") if summary else None
        return None if bridged is None else bridged.get("sample")

    def item_correct(self, weights: str = "best", system: str = "bridged") -> dict[str, int] | None:
        """Per test item (by id), 1 if ``system`` answered it right with the ``weights`` ("best" or
        "final"), else 0, read from the run's per-item evaluation file; the items the system did not run
        on are left out, as in its summary. None when the run has no such evaluation, the system was not
        run, the file is missing, or it does not give the summary's counts (ids not unique, say)."""
        summary = self.test.get(weights)
        if summary is None or summary["systems"].get(system) is None:
            return None
        step = summary["step"]
        names = ([f"eval_samples_test_best_step_{step}.jsonl"] if weights == "best" else []) + [
            f"eval_samples_test_step_{step}.jsonl"]
        path = next((self.folder / n for n in names if (self.folder / n).is_file()), None)
        if path is None:
            return None
        items = {str(r.get("id", r.get("index"))): int(bool(r[f"{system}_correct"]))
                 for r in read_jsonl(path) if r.get(f"{system}_full") is not None}
        s = summary["systems"][system]
        return items if (len(items), sum(items.values())) == (s["n"], s["correct"]) else None  # not the summary's items

    def flags(self) -> list[str]:
        """What is wrong with the run's test results: collapse (one answer for most items), no
        information from the source (bridged not better than shuffled at p < 0.05), each tagged
        ``(best)`` or ``(final)`` when only those weights show it; no test evaluation yet."""
        if not self.test:
            return [f"no test evaluation (status {self.status})"]
        found: dict[str, list[str]] = {}
        for weights in ("best", "final"):
            summary = self.test.get(weights)
            if summary is None:
                continue
            bridged = summary["systems"].get("bridged") or {}
            flow = summary.get("information_flow")
            if bridged.get("collapsed"):
                found.setdefault("collapse", []).append(weights)
            if flow is not None and flow.get("no_information"):
                found.setdefault("no information from the source", []).append(weights)
        tested = [w for w in ("best", "final") if w in self.test]
        return [flag if weights == tested else f"{flag} ({weights[0]})" for flag, weights in found.items()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def load_run(folder: str | Path) -> RunRecord:
    """A run folder's record; refuses folders of older versions, whose evaluations selected on test."""
    folder = Path(folder)
    if not is_run_folder(folder):
        raise LatentBridgeError(f"{folder} is not a run folder with evaluations (no recipe.yaml or summary.json)")
    recipe = parse_yaml((folder / "recipe.yaml").read_text(), str(folder / "recipe.yaml"))
    summary = json.loads((folder / "summary.json").read_text())
    if not summary.get("evaluations"):
        raise LatentBridgeError(f"{folder}: summary.json holds no evaluation yet")
    if "test" not in summary or any(e.get("split") != "dev" for e in summary["evaluations"]):
        raise LatentBridgeError(OLD_LAYOUT.format(folder=folder))
    info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    best = summary.get("best") or {}
    return RunRecord(folder, recipe, sorted(summary["evaluations"], key=lambda e: e["step"]),
                     read_jsonl(folder / "metrics.jsonl"), info.get("status", "unknown"), best_step=best.get("step"),
                     test=dict(summary.get("test") or {}), final_step=summary.get("final_step"),
                     stopped_early=bool(summary.get("stopped_early")), info=info)


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
