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

import hashlib
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

from .errors import LatentBridgeError

CHECKPOINTS = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")
CARD_FILE = "bridge_card.json"


# -- the bridge card ----------------------------------------------------------------------------------


def recipe_hash(recipe_dict: dict[str, Any]) -> str:
    """Hash of the resolved recipe, leaving out where the run is written."""
    data = {k: v for k, v in recipe_dict.items() if k not in ("run_dir",)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def bridge_card(experiment: Any) -> dict[str, Any]:
    """What a translator was trained for: the models (by hash), widths, vocabularies, layout and versions."""
    from . import __version__

    b = experiment.bridge
    recipe = experiment.recipe

    def side(model: Any) -> dict[str, Any]:
        return {
            "name": model.name,
            "config_hash": model.fingerprint["config"],
            "tokenizer_hash": model.fingerprint["tokenizer"],
            "hidden_size": model.hidden_size,
            "vocab_size": model.vocab_size,
        }

    return {
        "source": side(b.source),
        "target": side(b.target),
        "source_layer": b.source_layer,
        "k": b.translator.k,
        "translator": recipe.translator.name,
        "injection": recipe.injection.name,
        "latentbridge": __version__,
        "plugins": experiment.plugin_versions(),
        "recipe_hash": recipe_hash(recipe.to_dict()),
    }


CARD_CHECKED = [
    ("source", "config_hash"), ("source", "tokenizer_hash"), ("source", "hidden_size"), ("source", "vocab_size"),
    ("target", "config_hash"), ("target", "tokenizer_hash"), ("target", "hidden_size"), ("target", "vocab_size"),
    ("source_layer", None), ("k", None), ("translator", None),
]


def check_card(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse a translator made for another model pair, saying what differs."""
    diffs = []
    for key, sub in CARD_CHECKED:
        a = saved.get(key) if sub is None else (saved.get(key) or {}).get(sub)
        b = current.get(key) if sub is None else (current.get(key) or {}).get(sub)
        if a != b:
            name = key if sub is None else f"{key}.{sub}"
            diffs.append(f"{name} {a} -> {b}")
    if diffs:
        made_for = f"{saved['source']['name']} -> {saved['target']['name']}"
        now = f"{current['source']['name']} -> {current['target']['name']}"
        raise LatentBridgeError(
            f"{where} was trained for {made_for}, not for {now}: " + "; ".join(diffs)
        )


def read_card(folder: Path) -> dict[str, Any] | None:
    path = folder / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_card(folder: Path, card: dict[str, Any]) -> None:
    _write_file(folder / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())


# -- files ----------------------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
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
    save_file(_tensors(translator), str(tmp / "translator.safetensors"))
    objective_tensors = _tensors(objectives)
    if objective_tensors:
        save_file(objective_tensors, str(tmp / "objectives.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    best = run_dir / "best"
    if best.is_dir():
        shutil.copytree(best, tmp / "best")
    full_state = {**state, "step": step, "python_random": _python_random_state()}
    _write_file(tmp / "state.json", (json.dumps(full_state, indent=1) + "\n").encode())
    write_card(tmp, card)
    for path in tmp.rglob("*"):
        if path.is_file():
            _fsync(path)
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    _write_file(tmp / "checkpoint.json", (json.dumps({"step": step, "files": files}, indent=1) + "\n").encode())
    _fsync(tmp)
    final = root / f"step_{step}"
    if final.exists():  # the same step saved again (evaluation after a periodic checkpoint)
        old = root / f".step_{step}.old{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync(root)
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
            if _sha256(path) != digest:
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
