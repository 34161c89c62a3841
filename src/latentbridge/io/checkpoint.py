"""Checkpoints that survive a killed job, and the bridge card that says what a translator was made for.

A checkpoint is a folder ``checkpoints/step_<N>/`` holding everything needed to continue the run
exactly: translator and objective parameters (safetensors), optimizer and scheduler state
(``torch.save``, loaded only with ``weights_only=True``), every RNG state, the data position, the
run state (step, best metric, evaluations, the metrics window not yet written) and a copy of the
best weights. It is written into a temporary folder, every file flushed and fsynced, its checksums
recorded in ``checkpoint.json``, and only then renamed into place: a folder named ``step_<N>`` is
complete. Loading verifies the checksums; a corrupt newest checkpoint is reported in one line and
the previous one is used. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from latentbridge.errors import LatentBridgeError
from latentbridge.io.atomic import file_sha256, fsync_path, write_synced
from latentbridge.io.card import write_card
from latentbridge.io.weights import OBJECTIVES_FILE, WEIGHTS_FILE

CHECKPOINTS = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


# -- saving and loading ---------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    folder: Path
    step: int
    state: dict[str, Any]

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        path = self.folder / name
        return load_file(str(path)) if path.is_file() else {}

    def optimizer_state(self) -> dict[str, Any]:
        return torch.load(self.folder / "optimizer.pt", weights_only=True, map_location="cpu")


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    translator: torch.nn.Module,
    objectives: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    state: dict[str, Any],
    card: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically and prune to the newest ``keep``."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step_{step}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(module_tensors(translator), str(tmp / WEIGHTS_FILE))
    objective_tensors = module_tensors(objectives)
    if objective_tensors:
        save_file(objective_tensors, str(tmp / OBJECTIVES_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    best = run_dir / "best"
    if best.is_dir():
        shutil.copytree(best, tmp / "best")
    full_state = {**state, "step": step, "python_random": _python_random_state()}
    write_synced(tmp / "state.json", (json.dumps(full_state, indent=1) + "\n").encode())
    write_card(tmp, card)
    for path in tmp.rglob("*"):
        if path.is_file():
            fsync_path(path)
    files = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_synced(tmp / "checkpoint.json", (json.dumps({"step": step, "files": files}, indent=1) + "\n").encode())
    fsync_path(tmp)
    final = root / f"step_{step}"
    if final.exists():  # the same step saved again (evaluation after a periodic checkpoint)
        old = root / f".step_{step}.old{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    fsync_path(root)
    for stale in list_checkpoints(run_dir)[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_python_random(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, newest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def verify(folder: Path) -> Checkpoint:
    """Load a checkpoint's manifest and state, checking every file against its checksum."""
    manifest_path = folder / "checkpoint.json"
    if not manifest_path.is_file():
        raise LatentBridgeError(f"{folder.name}: no checkpoint.json (incomplete)")
    try:
        manifest = json.loads(manifest_path.read_text())
        for name, digest in manifest["files"].items():
            path = folder / name
            if not path.is_file():
                raise LatentBridgeError(f"{folder.name}: {name} is missing")
            if file_sha256(path) != digest:
                raise LatentBridgeError(f"{folder.name}: {name} is corrupt (checksum mismatch)")
        state = json.loads((folder / "state.json").read_text())
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LatentBridgeError(f"{folder.name}: unreadable ({type(exc).__name__})") from None
    return Checkpoint(folder, int(manifest["step"]), state)


def load_latest(run_dir: Path, warn: Any = print) -> Checkpoint:
    """The newest checkpoint that verifies; each one skipped is reported in one line."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise LatentBridgeError(f"{run_dir}: no checkpoint to resume from (checkpoints/ is empty or missing)")
    for folder in candidates:
        try:
            return verify(folder)
        except LatentBridgeError as exc:
            warn(f"skipping checkpoint {exc}")
    raise LatentBridgeError(f"{run_dir}: no usable checkpoint (all {len(candidates)} are damaged)")
