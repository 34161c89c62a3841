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
from typing import Any

from latentbridge.config.catalog import find_recipe, shipped_recipe
from latentbridge.config.overrides import _PLUGIN_KINDS, _delete, apply_overrides
from latentbridge.config.pairing import context_problems, layers_problems, message_problems
from latentbridge.config.schema import collect_config, config_to_dict, did_you_mean, is_text, show_value
from latentbridge.config.sections import (
    CacheConfig,
    CheckpointConfig,
    CurriculumConfig,
    EvalConfig,
    ModelsConfig,
    SourceConfig,
    TrainConfig,
)
from latentbridge.config.systems import system_problems
from latentbridge.config.yamlio import dump_yaml, parse_yaml
from latentbridge.errors import ConfigError, LatentBridgeError
from latentbridge.io.paths import kind_of
from latentbridge.registry.host import Registry, get_registry


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
    source: SourceConfig = field(default_factory=SourceConfig)
    loggers: dict[str, Any] = field(default_factory=dict)  # name -> config; `jsonl` always first
    resume: bool = field(default=False, compare=False)  # how to run, not what: not part of the recipe's record
    source_path: str | None = field(default=None, compare=False)
    overrides: tuple[str, ...] = field(default=(), compare=False)  # the command-line overrides it was loaded with

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every default filled in, as plain data (what a run records)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "run_dir": self.run_dir,
            "teacher": self.teacher,
            # options added after runs were made are written only when set, so those runs still resume
            "models": {k: v for k, v in config_to_dict(self.models).items() if k != "source_layers" or v is not None},
            "task": {k: v for k, v in self.task.as_dict().items()
                     if (k != "supervise" or v != "solution") and (k != "chat_template_kwargs" or v)},
            "translator": self.translator.as_dict(),
            "injection": self.injection.as_dict(),
            "objectives": {name: config_to_dict(cfg) for name, cfg in self.objectives.items()},
            "train": config_to_dict(self.train),
            "eval": {k: v for k, v in config_to_dict(self.eval).items() if k != "system_config" or v},
            "curriculum": config_to_dict(self.curriculum) if self.curriculum else None,
            "checkpoint": config_to_dict(self.checkpoint),
            "cache": config_to_dict(self.cache),
            "loggers": {name: config_to_dict(cfg) for name, cfg in self.loggers.items()},
            # written only when not the default, so that run folders made before it existed still resume
            **({"source": config_to_dict(self.source)} if self.source != SourceConfig() else {}),
        }

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


# -- validation ------------------------------------------------------------------------------------

_TOP_KEYS = ("name", "seed", "run_dir", "resume", "teacher", "models", "task", "translator", "injection",
             "objectives", "train", "eval", "curriculum", "checkpoint", "cache", "source", "loggers")
TEACHERS = ("answer", "prompt")


def _plugin_block(value: Any, path: str, problems: list[str]) -> tuple[str | None, dict[str, Any]]:
    if isinstance(value, str) and value.strip():
        return value, {}
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a plugin name or a mapping with 'name', got {show_value(value)}")
        return None, {}
    rest = dict(value)
    name = rest.pop("name", None)
    if not isinstance(name, str) or not name.strip():
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
    if "name" in data and (not isinstance(name, str) or not name.strip() or not is_text(name)):
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
    loggers = _loggers(data.get("loggers"), registry, problems)
    resume = data.get("resume", False)
    if not isinstance(resume, bool):
        problems.append(f"resume: expected true or false, got {show_value(resume)}")
    checkpoint = collect_config(CheckpointConfig, data.get("checkpoint"), "checkpoint", problems)
    cache = collect_config(CacheConfig, data.get("cache"), "cache", problems)
    source_view = collect_config(SourceConfig, data.get("source"), "source", problems)
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
            problems.extend(_unmet_needs(objectives, registry))
    problems.extend(message_problems(specs, objectives, curriculum, registry))
    problems.extend(layers_problems(models, specs, cache, registry))
    problems.extend(context_problems(specs, registry))
    problems.extend(system_problems(evaluation, {**data, "specs": specs}, registry))
    reader = specs.get("translator")
    if reader is not None and source_view is not None and source_view.view == "generation" \
            and registry.get("translator", reader.name).cls.reads_cache:
        problems.append(f"source.view: 'generation' with translator '{reader.name}', which fuses the source's cache "
                        "at the prompt's positions only (causal: the solution after them changes nothing there)")

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
        source=source_view,
        loggers=loggers,
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
        if kind_of(candidate, f"{source}: base") == "file":
            return candidate
    try:
        return shipped_recipe(base).path
    except LatentBridgeError:
        raise LatentBridgeError(f"{source}: base: recipe '{base}' not found next to {child.name} or shipped") from None


def _read(path: Path, source: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LatentBridgeError(f"{source}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})"
                                ) from None
    data = parse_yaml(text, source)
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


def _unmet_needs(objectives: Mapping[str, Any], registry: Registry) -> list[str]:
    """An objective's ``needs`` that no registered step quantity provides (a did-you-mean for each)."""
    known = sorted(q.name for q in registry.quantities())
    problems = []
    for name in objectives:
        for need in sorted(registry.get("objective", name).cls.needs):
            if need not in known:
                problems.append(f"objectives.{name}: needs '{need}', which no plugin provides"
                                f"{did_you_mean(need, known)}; known: {', '.join(known) or 'none'}")
    return problems


ALWAYS_ON_LOGGER = "jsonl"  # metrics.jsonl and speed.jsonl: the run's own record


def _loggers(value: Any, registry: Registry, problems: list[str]) -> dict[str, Any]:
    """``loggers``: a list of names or a mapping of names to settings; ``jsonl`` is always on (first).
    A logger whose optional library is not installed is a problem naming the pip extra."""
    if value is None:
        value = []
    if isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            problems.append(f"loggers: expected a list of logger names or a mapping of names to settings, "
                            f"got {show_value(value)}")
            return {}
        if len(set(value)) != len(value):
            problems.append("loggers: a logger is named twice")
        blocks: dict[Any, Any] = {name: {} for name in value}
    elif isinstance(value, Mapping):
        blocks = dict(value)
    else:
        problems.append(f"loggers: expected a list of logger names or a mapping of names to settings, "
                        f"got {show_value(value)}")
        return {}
    out: dict[str, Any] = {}
    for name in [ALWAYS_ON_LOGGER, *(n for n in blocks if n != ALWAYS_ON_LOGGER)]:
        path = f"loggers.{name}"
        if not isinstance(name, str):
            problems.append(f"loggers: expected logger names, got {show_value(name)}")
            continue
        config = registry.parse_config("logger", name, blocks.get(name) or {}, path, problems)
        if config is None:
            continue
        missing = registry.get("logger", name).cls.missing_requirements()
        if missing:
            extra = registry.get("logger", name).cls.extra
            hint = f': pip install "latentbridge[{extra}]"' if extra else ""
            problems.append(f"{path}: needs {', '.join(missing)}, which is not installed{hint}")
            continue
        out[name] = config
    return out


def load_recipe(recipe: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override and validate a recipe (a path or a shipped recipe's name)."""
    data, path = read_recipe_data(recipe)
    if Path(path).name == "recipe.yaml" and (Path(path).parent / "run.json").is_file():
        from latentbridge.io.card import as_run_made

        as_run_made(data)  # a run folder's recipe: the fields it predates at the values it ran with
    apply_overrides(data, overrides)
    resolved = validate_recipe(data, registry, source=str(recipe))
    resolved.overrides = tuple(overrides)
    return resolved
