"""What a model folder's ``config.json`` says about the architecture, read without loading any weight.

``validate`` (and every run, before the weights load) checks the recipe against these facts: the source
layer in range, and each plugin's own requirements (``check_models`` on a plugin class, for example an
objective that needs rotary position embeddings), reported as recipe problems with key paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError

# architectures whose positions are not rotary (learned absolute positions, ALiBi, ...)
NON_ROTARY = frozenset({"gpt2", "gpt_bigcode", "opt", "bloom", "mpt", "falcon_alibi", "bert", "roberta"})


@dataclass(frozen=True)
class ModelFacts:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rotary: bool
    sliding_window: int | None
    multimodal: bool  # the folder's config wraps a text config (Gemma-3, ...): the language model is used
    chat_template: bool = False  # its tokenizer has a chat template
    max_positions: int | None = None  # the longest sequence it reads (max_position_embeddings), where it says

    def layer_problem(self, layer: int, key: str) -> str | None:
        """A message when ``layer`` is not a valid ``hidden_states`` index (0 .. num_layers, or negative)."""
        n = self.num_layers
        if -(n + 1) <= layer <= n:
            return None
        return f"{key}: {layer} is out of range for {self.name} ({n} layers: use 0..{n} or -1..-{n + 1})"


def text_config(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The language model's part of a config (``text_config`` of a multimodal one) and whether it was nested."""
    inner = config.get("text_config")
    if isinstance(inner, dict):
        return {**inner, "model_type": inner.get("model_type", config.get("model_type"))}, True
    return config, False


def _rotary(config: dict[str, Any]) -> bool:
    model_type = str(config.get("model_type", ""))
    if model_type in NON_ROTARY:
        return False
    if model_type == "gpt_neox" or "rotary_pct" in config:
        return float(config.get("rotary_pct", 1.0)) > 0
    if "position_embedding_type" in config:
        return config["position_embedding_type"] == "rotary"
    return any(k in config for k in ("rope_theta", "rope_parameters", "rope_scaling", "rotary_dim")) or model_type in {
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2", "mixtral"}


def read_facts(name: str, path: Path) -> ModelFacts:
    try:
        raw = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LatentBridgeError(f"model folder {path}: config.json cannot be read ({type(exc).__name__})") from None
    config, nested = text_config(raw)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    return ModelFacts(
        name=name,
        model_type=str(config.get("model_type", "?")),
        hidden_size=hidden,
        num_layers=int(config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers") or 0),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or (hidden // heads if heads else 0)),
        vocab_size=int(config.get("vocab_size") or 0),
        rotary=_rotary(config),
        sliding_window=config.get("sliding_window") if config.get("use_sliding_window", True) else None,
        multimodal=nested,
        chat_template=has_chat_template(Path(path)),
        max_positions=_max_positions(config),
    )


def _max_positions(config: dict[str, Any]) -> int | None:
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if isinstance(value, int) and value > 0 else None


def folder_problems(key: str, name: str, path: Path) -> list[str]:
    """What makes ``path`` no model folder: a config.json without a model type or an architecture, or a
    tokenizer that does not load (read before any weight)."""
    try:
        raw = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{key}: {path}/config.json cannot be read ({type(exc).__name__})"]
    problems = []
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str) or not raw.get("model_type"):
        problems.append(f"{key}: {path}/config.json names no model_type: not a transformers model folder")
    elif not (isinstance(raw.get("architectures"), list) and raw["architectures"]):
        problems.append(f"{key}: {path}/config.json names no architectures (e.g. \"LlamaForCausalLM\"): "
                        "which model class to load is unknown")
    if problems:
        return problems
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001  (transformers raises many kinds of errors for a bad tokenizer)
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        problems.append(f"{key}: the tokenizer in {path} does not load ({first})")
    return problems


def has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((path / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, json.JSONDecodeError):
        return False


def model_problems(recipe: Any, registry: Any) -> list[str]:
    """Every incompatibility between the recipe and its model folders, found from their config.json."""
    from latentbridge.bridge.models import resolve_model_path

    m = recipe.models
    problems = [p for key, name in (("models.source", m.source), ("models.target", m.target))
                for p in folder_problems(key, name, resolve_model_path(name))]
    if problems:  # nothing else can be read off a folder that is not a model's
        return problems
    source = read_facts(m.source, resolve_model_path(m.source))
    target = read_facts(m.target, resolve_model_path(m.target))
    problems = [p for p in [source.layer_problem(m.source_layer, "models.source_layer")] if p]
    problems += [p for i, layer in enumerate(m.source_layers or ()) if (p := source.layer_problem(layer, f"models.source_layers[{i}]"))]
    for key, facts in (("d_src", source), ("d_tgt", target)):
        given = getattr(recipe.translator.config, key, None)
        if given is not None and given != facts.hidden_size:
            problems.append(f"translator.{key}: is {given} but {facts.name} has hidden size {facts.hidden_size}; "
                            f"remove translator.{key} to use the model's")
    k = getattr(recipe.translator.config, "k", None)
    if isinstance(k, int) and target.max_positions and k >= target.max_positions:
        problems.append(f"translator.k: {k} message positions do not fit in {target.name}'s context "
                        f"({target.max_positions} positions, max_position_embeddings)")
    if getattr(recipe.task.config, "chat_template", False):
        problems += [f"task.chat_template: the tokenizer of {f.name} has no chat template"
                     for f in (source, target) if not f.chat_template]
        t = recipe.translator.config
        if getattr(t, "chat_alignment", None) == "sections" and getattr(t, "include_response", False) \
                and getattr(t, "alignment", None) == "retokenize":
            problems.append("translator.include_response: not with chat templates and chat_alignment: sections "
                            "(response tokens do not follow the sections' positions yet); set "
                            "translator.chat_alignment=reencode")
    plugins = [("translator", recipe.translator.name, recipe.translator.config, "translator"),
               ("injection", recipe.injection.name, recipe.injection.config, "injection"),
               ("task", recipe.task.name, recipe.task.config, "task")]
    plugins += [("objective", name, config, f"objectives.{name}") for name, config in recipe.objectives.items()]
    for kind, name, config, path in plugins:
        check = getattr(registry.get(kind, name).cls, "check_models", None)
        if check is not None:
            # a problem is a line, or (key, line) for one of the plugin's settings: "<path>.<key>: <line>"
            problems += [f"{path}.{p[0]}: {p[1]}" if isinstance(p, tuple) else f"{path}: {p}"
                         for p in check(source, target, config)]
    return problems


def check_against_models(recipe: Any, registry: Any = None) -> None:
    """Raise :class:`ConfigError` listing every problem :func:`model_problems` finds."""
    from latentbridge.errors import ConfigError
    from latentbridge.registry.host import get_registry

    problems = model_problems(recipe, registry or get_registry())
    if problems:
        raise ConfigError(problems, recipe.source_path)
