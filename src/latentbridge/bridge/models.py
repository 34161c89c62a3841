"""Loading the frozen source and target models: built-in names or local Hugging Face folders.

Everything is offline: a model is a folder on disk (``local_files_only``), either one of the built-in
tiny models (``tiny-llama``, ``tiny-mistral``, shipped in the wheel) or a local folder of real weights
(``/models/Llama-3.1-8B``). Frozen means: ``requires_grad`` False on every parameter and eval mode.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge.errors import LatentBridgeError
from latentbridge.io.paths import kind_of, user_path

log = logging.getLogger("latentbridge")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def zoo_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "zoo" / "models"


def builtin_models() -> dict[str, Path]:
    """Built-in model names and their folders."""
    root = zoo_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def resolve_model_path(name: str) -> Path:
    """A built-in model's folder, or a local folder that holds a Hugging Face model."""
    builtins = builtin_models()
    if name in builtins:
        return builtins[name]
    path = user_path(name, "model")
    if kind_of(path, "model") == "dir":
        if not (path / "config.json").is_file():
            raise LatentBridgeError(f"model folder {path} has no config.json (not a Hugging Face model folder)")
        return path
    known = ", ".join(builtins) or "none"
    raise LatentBridgeError(
        f"model not found: '{name}' is neither a built-in model ({known}) nor a local folder "
        "(latentbridge never downloads; point to a folder of weights)"
    )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        from latentbridge.runtime.distributed import local_device

        return torch.device(local_device() or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise LatentBridgeError(f"models.device: unknown device '{device}'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LatentBridgeError(f"models.device is '{device}' but CUDA is not available on this machine")
    return resolved


def folder_fingerprint(path: Path) -> dict[str, str]:
    """Hashes that identify a model folder: its config, its tokenizer and its weights.

    Weights are fingerprinted by name, size and the first and last MiB of each file (reading 16 GB to
    hash it would cost a minute per run); config and tokenizer files are hashed whole, and so is a
    sharded checkpoint's index (``*.safetensors.index.json``: which tensor lives in which shard).
    """

    def sha(items: list[bytes]) -> str:
        digest = hashlib.sha256()
        for item in items:
            digest.update(hashlib.sha256(item).digest())
        return digest.hexdigest()[:16]

    config = (path / "config.json").read_bytes()
    tokenizer = [(path / f).read_bytes() for f in _TOKENIZER_FILES if (path / f).is_file()]
    weights: list[bytes] = []
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(1 << 20)
            handle.seek(max(0, size - (1 << 20)))
            tail = handle.read(1 << 20)
        weights.append(f"{file.name}:{size}".encode() + head + tail)
    for index in sorted(path.glob("*.index.json")):
        weights.append(f"{index.name}:".encode() + index.read_bytes())
    return {"config": sha([config]), "tokenizer": sha(tokenizer), "weights": sha(weights)}


@dataclass
class FrozenModel:
    """A frozen causal LM with its tokenizer and the facts the bridge needs."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    pad_id: int
    fingerprint: dict[str, str]

    @property
    def text_config(self) -> Any:
        """The language model's config (a multimodal folder's ``text_config``, such as Gemma-3's)."""
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def sliding_window(self) -> int | None:
        """The attention window of its sliding-window layers, or None when every layer sees everything."""
        c = self.text_config
        window = getattr(c, "sliding_window", None)
        if not window or getattr(c, "use_sliding_window", True) is False:
            return None
        layer_types = getattr(c, "layer_types", None)
        if layer_types is not None and "sliding_attention" not in layer_types:
            return None
        return int(window)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    @torch.no_grad()
    def embedding_rms(self, chunk: int = 4096) -> float:
        """Median RMS of what the input-embedding module returns for each token of the vocabulary: the
        typical size of one real token's embedding as the model reads it (Gemma's module multiplies its
        weight by sqrt(hidden_size), so the weight alone would be the wrong scale)."""
        rms = []
        for start in range(0, self.vocab_size, chunk):
            ids = torch.arange(start, min(start + chunk, self.vocab_size))[None]
            rms.append(self.embed(ids)[0].float().pow(2).mean(-1).sqrt().cpu())
        return float(torch.cat(rms).median())

    @functools.cached_property
    def kv_geometry(self) -> dict[str, Any]:
        """Its key/value cache as its own attention code writes it, read off a forward pass on a short
        text: ``layers``, ``kv_heads``, ``head_dim`` and ``kv_rms`` (per layer, the RMS of its keys, then of
        its values: the typical size of a real token's cache entry)."""
        ids = torch.tensor([self.tokenizer("The cache of a short sentence, read once.")["input_ids"]], device=self.device)
        with torch.no_grad():
            out = self.model(input_ids=ids, use_cache=True)
        layers = cache_of(out).layers
        rms = [float(t.float().pow(2).mean().sqrt()) for layer in layers for t in (layer.keys, layer.values)]
        b, heads, t, dim = layers[0].keys.shape
        return {"layers": len(layers), "kv_heads": int(heads), "head_dim": int(dim), "kv_rms": rms}

    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            found.add(self.tokenizer.eos_token_id)
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": type(self.model).__name__,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
        }


def load_frozen(
    name: str, *, dtype: str = "auto", device: str = "auto", device_map: Any = None, trust_remote_code: bool = False
) -> FrozenModel:
    """Load a model and tokenizer from a built-in name or local folder, frozen, on ``device``.

    ``dtype="auto"`` keeps the checkpoint's own dtype, loaded directly (no float32 copy first).
    ``device_map`` (``"auto"``, ``"balanced"``, ... or ``{module: device}``) spreads the model over
    several devices with accelerate instead; inputs go to the device of its input embeddings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    if trust_remote_code:
        log.warning("trust_remote_code is ON for %s: the model folder may run its own code", name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        placement = {"device_map": device_map} if device_map is not None else {}
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code,
            dtype="auto" if dtype == "auto" else DTYPES[dtype], **placement,
        )
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LatentBridgeError(f"could not load model '{name}' from {path}: {first}") from None
    if device_map is None:
        model.to(resolve_device(device))
    model.eval().requires_grad_(False)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        log.info("tokenizer of %s has no pad token; padding with id %d (always masked out)", name, pad_id)
    frozen = FrozenModel(name, path, model, tokenizer, int(pad_id), folder_fingerprint(path))
    if frozen.sliding_window is not None:  # windows measured in positions: padding inside a row never counts
        from latentbridge.bridge.windows import install_position_windows

        install_position_windows(model, frozen.sliding_window, _cache_argument(type(model)))
    return frozen


@functools.cache
def _cache_argument(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that hands a key/value cache to ``model``'s forward: ``cache`` (transformers that
    renamed it) or ``past_key_values`` (the older spelling), whichever the model takes."""
    return {_cache_argument(type(model)): cache}


def cache_of(output: Any) -> Any:
    """The key/value cache a forward pass returned, under either spelling."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def read_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())
