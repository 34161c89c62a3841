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

from .catalog import find_recipe, shipped_recipe
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
    autocast: bool = option(True, help="on CUDA with a 16-bit dtype, run steps under torch.autocast (fp32 master weights)")
    device: str = option("auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    trust_remote_code: bool = option(False, help="allow model folders to run their own code (off unless set)")


@dataclass
class TrainConfig:
    steps: int = option(300, ge=0, help="optimizer steps (0: evaluate the untrained translator only)")
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
    max_nonfinite: int = option(5, gt=0, help="stop after this many non-finite losses in a row (each is skipped)")

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.warmup_steps > self.steps > 0:
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
class CheckpointConfig:
    every: int = option(100, gt=0, help="write a checkpoint every N steps (also at each evaluation and at the end)")
    keep: int = option(2, gt=0, help="how many of the newest checkpoints to keep")


@dataclass
class CacheConfig:
    source: bool = option(False, help="cache the source's hidden states on disk and reuse them (epochs, runs)")
    dir: str | None = option(None, help="cache folder (default: $LATENTBRIDGE_CACHE_DIR or ~/.cache/latentbridge)")


@dataclass
class CurriculumConfig:
    """From ``soft_plus_text`` to the recipe's injection: the share of training examples that still read
    the literal question falls linearly from 1 (up to ``fade_start``) to 0 (from ``fade_end`` on)."""

    fade_start: int = option(ge=0, help="until this step every training example reads the question text")
    fade_end: int = option(gt=0, help="from this step no training example does")
    text_injection: str = option("soft_plus_text", help="injection mode of the examples that read the question")

    def check(self) -> list[tuple[str, str]]:
        if self.fade_end <= self.fade_start:
            return [("fade_end", f"must be > fade_start ({self.fade_start}), got {self.fade_end}")]
        return []

    def text_fraction(self, step: int) -> float:
        if step <= self.fade_start:
            return 1.0
        if step >= self.fade_end:
            return 0.0
        return 1.0 - (step - self.fade_start) / (self.fade_end - self.fade_start)


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
    teacher: str = "answer"
    curriculum: CurriculumConfig | None = None
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    resume: bool = field(default=False, compare=False)  # how to run, not what: not part of the recipe's record
    source_path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every default filled in, as plain data (what a run records)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "run_dir": self.run_dir,
            "teacher": self.teacher,
            "models": config_to_dict(self.models),
            "task": self.task.as_dict(),
            "translator": self.translator.as_dict(),
            "injection": self.injection.as_dict(),
            "objectives": {name: config_to_dict(cfg) for name, cfg in self.objectives.items()},
            "train": config_to_dict(self.train),
            "eval": config_to_dict(self.eval),
            "curriculum": config_to_dict(self.curriculum) if self.curriculum else None,
            "checkpoint": config_to_dict(self.checkpoint),
            "cache": config_to_dict(self.cache),
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

_TOP_KEYS = ("name", "seed", "run_dir", "resume", "teacher", "models", "task", "translator", "injection",
             "objectives", "train", "eval", "curriculum", "checkpoint", "cache")
TEACHERS = ("answer", "prompt")
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

    teacher = data.get("teacher", "answer")
    if teacher not in TEACHERS:
        problems.append(f"teacher: expected one of 'answer', 'prompt', got {show_value(teacher)}"
                        + (did_you_mean(teacher, TEACHERS) if isinstance(teacher, str) else ""))
    curriculum = None
    if data.get("curriculum") is not None:
        curriculum = collect_config(CurriculumConfig, data["curriculum"], "curriculum", problems)
        text_mode = data["curriculum"].get("text_injection") if isinstance(data["curriculum"], Mapping) else None
        if isinstance(text_mode, str) and text_mode not in registry.names("injection"):
            problems.append(registry.unknown_message("injection", text_mode, "curriculum.text_injection"))
            curriculum = None
    resume = data.get("resume", False)
    if not isinstance(resume, bool):
        problems.append(f"resume: expected true or false, got {show_value(resume)}")
    checkpoint = collect_config(CheckpointConfig, data.get("checkpoint"), "checkpoint", problems)
    cache = collect_config(CacheConfig, data.get("cache"), "cache", problems)
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
            for obj_name, config in objectives.items():
                other = config.scale_with
                if other is not None and (other == obj_name or other not in raw_objectives):
                    names = [n for n in raw_objectives if n != obj_name]
                    problems.append(
                        f"objectives.{obj_name}.scale_with: {other!r} is not another objective of this recipe"
                        + did_you_mean(str(other), names)
                    )

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
        teacher=teacher,
        curriculum=curriculum,
        checkpoint=checkpoint,
        cache=cache,
        resume=resume,
        source_path=source,
    )


def _merge(parent: dict[str, Any], child: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """``child`` over ``parent``: mappings merge key by key, anything else replaces. A plugin block that
    names another plugin replaces the parent's block whole (its keys belong to the other plugin)."""
    out = dict(parent)
    for key, value in child.items():
        old = out.get(key)
        if top and key in _PLUGIN_KINDS:
            old_name = old.get("name") if isinstance(old, dict) else old
            new_name = value.get("name", old_name) if isinstance(value, dict) else value
            if new_name != old_name:
                out[key] = value
                continue
            if isinstance(old, str):
                old = {"name": old}
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge(old, value, top=False)
        else:
            out[key] = value
    return out


def _resolve_base(base: Any, child: Path, source: str) -> Path:
    if not isinstance(base, str) or not base.strip():
        raise LatentBridgeError(f"{source}: base: expected a recipe name or path, got {show_value(base)}")
    for candidate in (child.parent / base, child.parent / f"{base}.yaml"):
        if candidate.is_file():
            return candidate
    try:
        return shipped_recipe(base).path
    except LatentBridgeError:
        raise LatentBridgeError(f"{source}: base: recipe '{base}' not found next to {child.name} or shipped") from None


def _read(path: Path, source: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = parse_yaml(path.read_text(encoding="utf-8"), source)
    if data is None:
        raise LatentBridgeError(f"{source}: the recipe is empty")
    if not isinstance(data, dict):
        raise LatentBridgeError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    remove = data.pop("remove", None) or []
    if base is None:
        if remove:
            raise LatentBridgeError(f"{source}: remove: only a recipe with a base can remove keys")
        return data
    parent_path = _resolve_base(base, path, source)
    if parent_path.resolve() in chain:
        raise LatentBridgeError(f"{source}: base: recipes inherit in a circle ({base})")
    merged = _merge(_read(parent_path, str(base), (*chain, parent_path.resolve())), data)
    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
        raise LatentBridgeError(f"{source}: remove: expected a list of key paths, got {show_value(remove)}")
    for key in remove:
        try:
            _delete(merged, key, key)
        except LatentBridgeError:
            raise LatentBridgeError(f"{source}: remove: {key} is not a key of the recipe or its base") from None
    return merged


def read_recipe_data(recipe: str | Path) -> tuple[dict[str, Any], str]:
    """The raw mapping of a recipe (a path, or a shipped recipe's name), its ``base`` chain resolved:
    the child's keys over the parent's, then the child's ``remove`` list deleted."""
    path = find_recipe(str(recipe))
    return _read(path, str(recipe), (path.resolve(),)), str(path)


def load_recipe(recipe: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override and validate a recipe (a path or a shipped recipe's name)."""
    data, path = read_recipe_data(recipe)
    apply_overrides(data, overrides)
    return validate_recipe(data, registry, source=str(recipe))
