"""A translator's weights as safetensors beside a JSON config, so it can be rebuilt from those two files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from latentbridge.api.translator import Translator
from latentbridge.errors import LatentBridgeError

WEIGHTS_FILE = "translator.safetensors"
CONFIG_FILE = "translator.json"
OBJECTIVES_FILE = "objectives.safetensors"  # parameters that objectives own (probe heads), beside the translator


def save_translator(translator: Translator, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``translator.safetensors`` and ``translator.json`` into ``folder``.

    The tensors are cloned to contiguous memory first, so the files never alias the live weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in translator.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    meta = translator.describe() | (extra or {})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def read_translator_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise LatentBridgeError(f"no translator found: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LatentBridgeError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_tensors(path: str | Path) -> dict[str, Any]:
    """A safetensors file's tensors; a damaged or foreign file is one line naming it."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types for a damaged file)
        raise LatentBridgeError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]}); the run's "
                                "checkpoints/ keep earlier copies") from None


def load_translator_weights(translator: Translator, folder: str | Path) -> Translator:
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise LatentBridgeError(f"no translator weights: {path} does not exist")
    state = read_tensors(path)
    try:
        missing, unexpected = translator.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0])
        raise LatentBridgeError(f"{path}: weights do not fit translator '{translator.name}' ({detail})") from None
    if missing or unexpected:
        raise LatentBridgeError(
            f"{path}: weights do not fit translator '{translator.name}' "
            f"(missing: {sorted(missing)}, unexpected: {sorted(unexpected)})"
        )
    return translator


def load_translator(folder: str | Path, registry: Any = None) -> Translator:
    """Rebuild a translator from ``translator.json`` + ``translator.safetensors`` alone."""
    from latentbridge.registry.host import get_registry

    registry = registry or get_registry()
    meta = read_translator_meta(folder)
    name = meta.get("name")
    config = registry.config_for("translator", name, meta.get("config", {}), path=f"{folder}/{CONFIG_FILE}")
    translator = registry.get("translator", name).cls(config)
    return load_translator_weights(translator, folder).eval()
