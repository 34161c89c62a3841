"""Recipes: YAML experiment descriptions, validated against a typed schema before anything loads.

A recipe names the models, the task, the translator, the injection mode and the objectives (each a
plugin with its own config), plus training and evaluation settings. :func:`load_recipe` reads the
YAML safely, applies command-line overrides (``key.path=value``, ``~key.path`` to delete), and
validates everything at once: every problem is reported with its key path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .catalog import find_recipe
from .configs import collect_config, config_to_dict, did_you_mean, option, show_value
from .errors import ConfigError, LatentBridgeError
from .registry import Registry, get_registry

SYSTEMS = ("source", "target", "bridged", "relay")


@dataclass
class ModelsConfig:
    source: str = option(help="source model: a built-in name (tiny-llama, tiny-mistral) or a local folder")
    target: str = option(help="target model: a built-in name or a local Hugging Face folder")
    source_layer: int = option(-1, help="which hidden_states entry of the source to translate (0: embeddings, -1: last)")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", help="dtype of the frozen models")
    device: str = option("auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    trust_remote_code: bool = option(False, help="allow model folders to run their own code (off unless set)")


@dataclass
class TrainConfig:
    steps: int = option(300, gt=0, help="optimizer steps")
    batch_size: int = option(8, gt=0, help="examples per micro-batch")
    grad_accum: int = option(1, gt=0, help="micro-batches per optimizer step")
    lr: float = option(1e-3, gt=0, help="peak learning rate (AdamW)")
    weight_decay: float = option(0.0, ge=0, help="AdamW weight decay")
    betas: list[float] = option(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    warmup_steps: int = option(0, ge=0, help="linear warm-up steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", help="decay after warm-up")
    min_lr_ratio: float = option(0.0, ge=0, le=1, help="final learning rate as a fraction of lr")
    max_grad_norm: float | None = option(1.0, gt=0, help="gradient clipping norm (null: off)")
    log_every: int = option(10, gt=0, help="write a metrics.jsonl line every N steps")
    max_train_examples: int | None = option(None, gt=0, help="use only the first N train examples")

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.warmup_steps > self.steps:
            problems.append(("warmup_steps", f"must be <= train.steps ({self.steps}), got {self.warmup_steps}"))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(("betas", f"expected two numbers in [0, 1), got {show_value(self.betas)}"))
        return problems


@dataclass
class EvalConfig:
    every: int = option(100, gt=0, help="evaluate every N steps (and always at the end)")
    n: int = option(200, gt=0, help="test items per evaluation")
    batch_size: int = option(32, gt=0, help="items per generation batch")
    max_new_tokens: int = option(96, gt=0, help="generation limit per answer")
    systems: list[Literal["source", "target", "bridged", "relay"]] = option(
        default_factory=lambda: list(SYSTEMS), help="systems to evaluate; baselines are computed once and cached"
    )
    stop: list[str] = option(default_factory=lambda: ["\n\n"], help="stop strings for generation")
    patience: int | None = option(None, gt=0, help="stop after N evaluations without a better bridged accuracy")

    def check(self) -> list[tuple[str, str]]:
        if "bridged" not in self.systems:
            return [("systems", "must include 'bridged' (the system being trained)")]
        return []


@dataclass
class PluginSpec:
    """A plugin chosen by name, with its validated config."""

    name: str
    config: Any

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **config_to_dict(self.config)}


@dataclass
class Recipe:
    name: str
    seed: int
    models: ModelsConfig
    task: PluginSpec
    translator: PluginSpec
    injection: PluginSpec
    objectives: dict[str, Any]
    train: TrainConfig
    eval: EvalConfig
    run_dir: str | None = None
    source_path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every default filled in, as plain data (what a run records)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "run_dir": self.run_dir,
            "models": config_to_dict(self.models),
            "task": self.task.as_dict(),
            "translator": self.translator.as_dict(),
            "injection": self.injection.as_dict(),
            "objectives": {name: config_to_dict(cfg) for name, cfg in self.objectives.items()},
            "train": config_to_dict(self.train),
            "eval": config_to_dict(self.eval),
        }

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


# -- YAML ------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "<recipe>") -> Any:
    """Safe YAML; a syntax error becomes one line with the file, line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "malformed YAML"
        raise LatentBridgeError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise LatentBridgeError(f"{source}: malformed YAML: {exc}") from None


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


# -- overrides -------------------------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key.path=value`` sets (value parsed as YAML, creating mappings on the way); ``~key.path`` deletes."""
    for item in overrides:
        if item.startswith("~"):
            _delete(data, item[1:], item)
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LatentBridgeError(f"override {item!r}: expected key.path=value or ~key.path")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML: keep the text as typed
        _set(data, key.strip(), value, item)
    return data


def _walk(data: dict[str, Any], parts: list[str], item: str, create: bool) -> dict[str, Any]:
    node: Any = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise LatentBridgeError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
        if part not in node or node[part] is None:
            if not create:
                raise LatentBridgeError(f"override {item!r}: the recipe has no key {'.'.join(parts[: i + 1])}")
            node[part] = {}
        elif i == 0 and part in _PLUGIN_KINDS and isinstance(node[part], str):  # `translator: linear`
            node[part] = {"name": node[part]}
        node = node[part]
    if not isinstance(node, dict):
        raise LatentBridgeError(f"override {item!r}: {'.'.join(parts)} is not a mapping")
    return node


def _set(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    _walk(data, parts[:-1], item, create=True)[parts[-1]] = value


def _delete(data: dict[str, Any], key: str, item: str) -> None:
    parts = key.split(".")
    parent = _walk(data, parts[:-1], item, create=False)
    if parts[-1] not in parent:
        raise LatentBridgeError(f"override {item!r}: the recipe has no key {key}")
    del parent[parts[-1]]


# -- validation ------------------------------------------------------------------------------------

_TOP_KEYS = ("name", "seed", "run_dir", "models", "task", "translator", "injection", "objectives", "train", "eval")
_PLUGIN_KINDS = {"task": "task", "translator": "translator", "injection": "injection"}


def _plugin_block(value: Any, path: str, problems: list[str]) -> tuple[str | None, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a plugin name or a mapping with 'name', got {show_value(value)}")
        return None, {}
    rest = dict(value)
    name = rest.pop("name", None)
    if not isinstance(name, str):
        problems.append(f"{path}.name: expected a plugin name, got {show_value(name)}")
        return None, {}
    return name, rest


def validate_recipe(data: Any, registry: Registry | None = None, source: str | None = None) -> Recipe:
    """Check a recipe mapping against the schema and the plugins' configs; report every problem."""
    registry = registry or get_registry()
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"recipe: expected a mapping at the top level, got {show_value(data)}"], source)
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(f"{key}: unknown key{did_you_mean(str(key), _TOP_KEYS)}")
    for key in ("name", "models", "task", "translator", "injection", "objectives"):
        if key not in data:
            problems.append(f"{key}: required key is missing")
    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        problems.append(f"name: expected a non-empty string, got {show_value(name)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"seed: expected an integer >= 0, got {show_value(seed)}")
    run_dir = data.get("run_dir")
    if run_dir is not None and not isinstance(run_dir, str):
        problems.append(f"run_dir: expected a string or null, got {show_value(run_dir)}")

    models = collect_config(ModelsConfig, data.get("models"), "models", problems) if "models" in data else None
    train = collect_config(TrainConfig, data.get("train"), "train", problems)
    evaluation = collect_config(EvalConfig, data.get("eval"), "eval", problems)

    specs: dict[str, PluginSpec | None] = {}
    for key, kind in _PLUGIN_KINDS.items():
        if key not in data:
            continue
        plugin_name, rest = _plugin_block(data[key], key, problems)
        config = registry.parse_config(kind, plugin_name, rest, key, problems) if plugin_name else None
        specs[key] = PluginSpec(plugin_name, config) if config is not None else None

    objectives: dict[str, Any] = {}
    raw_objectives = data.get("objectives")
    if "objectives" in data:
        if not isinstance(raw_objectives, Mapping) or not raw_objectives:
            problems.append(
                f"objectives: expected a mapping of objective names to settings, got {show_value(raw_objectives)}"
            )
        else:
            for obj_name, block in raw_objectives.items():
                config = registry.parse_config("objective", str(obj_name), block, f"objectives.{obj_name}", problems)
                if config is not None:
                    objectives[str(obj_name)] = config
            if objectives and len(objectives) == len(raw_objectives) and all(c.weight == 0 for c in objectives.values()):
                problems.append("objectives: every weight is 0, so nothing would be trained")

    if problems:
        raise ConfigError(problems, source)
    return Recipe(
        name=name,
        seed=seed,
        models=models,
        task=specs["task"],
        translator=specs["translator"],
        injection=specs["injection"],
        objectives=objectives,
        train=train,
        eval=evaluation,
        run_dir=run_dir,
        source_path=source,
    )


def read_recipe_data(recipe: str | Path) -> tuple[dict[str, Any], str]:
    """The raw mapping of a recipe file (a path, or the name of a shipped recipe) and where it came from."""
    path = find_recipe(str(recipe))
    text = path.read_text(encoding="utf-8")
    data = parse_yaml(text, str(recipe))
    if data is None:
        raise LatentBridgeError(f"{recipe}: the recipe is empty")
    if not isinstance(data, dict):
        raise LatentBridgeError(f"{recipe}: expected a mapping at the top level, got {type(data).__name__}")
    return data, str(path)


def load_recipe(recipe: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override and validate a recipe (a path or a shipped recipe's name)."""
    data, path = read_recipe_data(recipe)
    apply_overrides(data, overrides)
    return validate_recipe(data, registry, source=str(recipe))
