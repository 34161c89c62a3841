"""Reading the C2C authors' released fusers (thu-nics/C2C, e.g. ``nics-efc/C2C_Fuser``'s folders).

A checkpoint folder (their ``final/`` or ``checkpoint-N/``) holds, per projector ``i``:

* ``projector_{i}.json``: ``{"class": "C2CProjector", "init_args": {...}}`` (``source_dim`` and
  ``target_dim`` per head, ``source_num_heads``, ``target_num_heads``, ``hidden_dim``,
  ``intermediate_dim``, ``num_layers``, ``dropout``, ``initial_temperature``, ``final_temperature``,
  ``anneal_steps``, ``dtype``);
* ``projector_{i}.pt``: its state dict (``key_in.weight``, ``key_mlp1.blocks.0.norm.weight``, ...,
  ``key_gate_logit``, the value side alike, and the buffer ``gate_temperature``), read with
  ``torch.load(weights_only=True)``: tensors only, never an arbitrary pickle;

and ``projector_config.json``, the layer map ``{"0": {"1": {"<receiver layer>": [[<sharer layer>,
<projector>]]}}}`` (receiver model 0, sharer model 1).

:func:`read_reference` turns that into the ``c2c`` translator's settings, its layer map and its state dict
(``fusers.<receiver layer>.<their key>``: the translator's modules carry the authors' names).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge.errors import LatentBridgeError

CLASS = "C2CProjector"
SETTINGS = {"hidden_dim": "hidden", "intermediate_dim": "intermediate", "num_layers": "blocks", "dropout": "dropout",
            "initial_temperature": "temperature", "final_temperature": "final_temperature",
            "anneal_steps": "anneal_steps"}
SAME_FOR_ALL = ("source_dim", "target_dim", "source_num_heads", "target_num_heads", *SETTINGS)


@dataclass
class ReferenceFuser:
    settings: dict[str, Any]  # the c2c translator's options
    geometry: dict[str, int]  # per head widths and kv heads of both sides
    layer_map: dict[int, int]  # receiver layer -> sharer layer
    state: dict[str, torch.Tensor]  # the translator's state dict (fusers only)


def _json(path: Path) -> Any:
    if not path.is_file():
        raise LatentBridgeError(f"not a C2C checkpoint: {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LatentBridgeError(f"{path}: not valid JSON ({exc})") from None


def _layer_map(folder: Path) -> dict[int, tuple[int, int]]:
    """Receiver layer -> (sharer layer, projector index)."""
    path = folder / "projector_config.json"
    data = _json(path)
    try:
        layers = data["0"]["1"]
    except (KeyError, TypeError):
        raise LatentBridgeError(f"{path}: expected {{'0': {{'1': {{receiver layer: [[sharer layer, projector]]}}}}}}"
                                " (receiver 0, sharer 1)") from None
    out = {}
    for receiver, pairs in layers.items():
        if not (isinstance(pairs, list) and len(pairs) == 1 and isinstance(pairs[0], list) and len(pairs[0]) == 2):
            raise LatentBridgeError(f"{path}: receiver layer {receiver} must read one sharer layer "
                                    f"([[sharer, projector]]), got {pairs!r}")
        out[int(receiver)] = (int(pairs[0][0]), int(pairs[0][1]))
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LatentBridgeError(f"not a C2C checkpoint: {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LatentBridgeError(f"{path}: not a plain state dict of tensors (read with weights_only=True, never as "
                                f"an arbitrary pickle): {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LatentBridgeError(f"{path}: expected a state dict of tensors")
    return state


def read_reference(folder: str | Path) -> ReferenceFuser:
    """The fusers of a C2C checkpoint folder, as ``c2c`` translator settings and state dict."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LatentBridgeError(f"C2C checkpoint folder not found: {folder}")
    mapping = _layer_map(folder)
    if not mapping:
        raise LatentBridgeError(f"{folder / 'projector_config.json'}: no receiver layer is mapped")
    init: dict[str, Any] | None = None
    state: dict[str, torch.Tensor] = {}
    for receiver, (_, index) in sorted(mapping.items()):
        meta = _json(folder / f"projector_{index}.json")
        if not isinstance(meta, dict) or meta.get("class") != CLASS:
            raise LatentBridgeError(f"{folder / f'projector_{index}.json'}: class "
                                    f"{meta.get('class') if isinstance(meta, dict) else meta!r}, not {CLASS}")
        args = meta.get("init_args") or {}
        missing = [k for k in ("source_dim", "target_dim") if k not in args]
        if missing:
            raise LatentBridgeError(f"{folder / f'projector_{index}.json'}: init_args lacks {', '.join(missing)}")
        mine = {k: args.get(k) for k in SAME_FOR_ALL}
        if init is None:
            init = mine
        elif mine != init:
            diff = [k for k in SAME_FOR_ALL if mine[k] != init[k]]
            raise LatentBridgeError(f"{folder / f'projector_{index}.json'}: {', '.join(diff)} differ from the first "
                                    "projector's (latentbridge's c2c has one setting for every layer)")
        for key, tensor in _state(folder / f"projector_{index}.pt").items():
            if key != "gate_temperature":  # a buffer: the temperature the run had reached
                state[f"fusers.{receiver}.{key}"] = tensor
    assert init is not None
    settings = {ours: init[theirs] for theirs, ours in SETTINGS.items() if init.get(theirs) is not None}
    geometry = {"source_head_dim": int(init["source_dim"]), "target_head_dim": int(init["target_dim"]),
                "source_kv_heads": int(init.get("source_num_heads") or 1),
                "target_kv_heads": int(init.get("target_num_heads") or 1)}
    return ReferenceFuser(settings, geometry, {r: s for r, (s, _) in mapping.items()}, state)
