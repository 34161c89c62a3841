"""Building everything a recipe names: frozen models, task, translator, injection mode, objectives."""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentbridge.api.context import BuildContext
from latentbridge.api.task import Task
from latentbridge.api.translator import KVGeometryConfig, SoftTokenConfig, Translator, TranslatorConfig
from latentbridge.bridge.core import Bridge
from latentbridge.bridge.facts import check_against_models
from latentbridge.bridge.models import FrozenModel, load_frozen
from latentbridge.config.recipe import Recipe
from latentbridge.errors import LatentBridgeError
from latentbridge.io.weights import OBJECTIVES_FILE, load_translator_weights
from latentbridge.registry.blame import blame
from latentbridge.registry.host import Registry, get_registry
from latentbridge.runtime.distributed import world_size


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Experiment:
    recipe: Recipe
    registry: Registry
    task: Task
    bridge: Bridge
    objectives: nn.ModuleDict

    @property
    def translator(self) -> Translator:
        return self.bridge.translator

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.translator.parameters()) + list(self.objectives.parameters())
        return [p for p in params if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups: the translator's own (:meth:`Translator.param_groups`), then the
        objectives' parameters. A translator's groups must hold each of its trainable parameters once."""
        allowed = {"params", "lr", "weight_decay"}
        groups = []
        for group in self.translator.param_groups():
            extra = set(group) - allowed
            if extra:
                raise LatentBridgeError(f"translator '{self.translator.name}': a parameter group may set "
                                        f"{', '.join(sorted(allowed - {'params'}))}, not {', '.join(sorted(extra))}")
            groups.append({**group, "params": [p for p in group["params"] if p.requires_grad]})
        grouped = [id(p) for g in groups for p in g["params"]]
        own = {id(p) for p in self.translator.parameters() if p.requires_grad}
        if len(grouped) != len(set(grouped)) or set(grouped) != own:
            raise LatentBridgeError(f"translator '{self.translator.name}': its parameter groups must hold each "
                                    "trainable parameter exactly once")
        objectives = [p for p in self.objectives.parameters() if p.requires_grad]
        return [g for g in groups if g["params"]] + ([{"params": objectives}] if objectives else [])

    def plugin_versions(self) -> dict[str, dict[str, str]]:
        chosen = [("task", self.recipe.task.name), ("translator", self.recipe.translator.name),
                  ("injection", self.recipe.injection.name)]
        chosen += [("objective", name) for name in self.recipe.objectives]
        out = {}
        for kind, name in chosen:
            info = self.registry.get(kind, name)
            out[f"{kind}:{name}"] = {"distribution": info.provider.distribution, "version": info.provider.version,
                                     "module": info.provider.module}
        return out

    @classmethod
    def build(
        cls, recipe: Recipe, registry: Registry | None = None, log: Callable[[str], None] = lambda _: None,
        translator_dir: str | None = None, should_stop: Callable[[], str | None] | None = None,
        solve_upfront: bool = True,
    ) -> Experiment:
        """Everything a recipe names, loaded. ``solve_upfront=False`` (``source.view: generation``) leaves the
        source's solutions to be made as each prompt is first read (a probe that reads a few batches)."""
        registry = registry or get_registry()
        seed_everything(recipe.seed)
        task = build_plugin(registry, "task", recipe.task.name, recipe.task.config)
        task.dev_size = recipe.eval.dev_n
        with blame("task", recipe.task.name, task):  # a task that fails to load its data names itself
            for split in ("train", "dev", "test"):
                task.examples(split)
        check_against_models(recipe, registry)  # before any weight loads
        m = recipe.models
        log(f"loading source {m.source} and target {m.target} (dtype {m.dtype})")
        maps = m.device_map or {}
        source = load_frozen(m.source, dtype=m.dtype, device=m.source_device or m.device, device_map=maps.get("source"),
                             trust_remote_code=m.trust_remote_code)
        target = load_frozen(m.target, dtype=m.dtype, device=m.target_device or m.device, device_map=maps.get("target"),
                             trust_remote_code=m.trust_remote_code)
        layers = source.num_layers
        if not -(layers + 1) <= m.source_layer <= layers:
            raise LatentBridgeError(
                f"models.source_layer: {m.source_layer} is out of range for {m.source} "
                f"({layers} layers: use 0..{layers} or -1..-{layers + 1})"
            )
        translator = build_translator(recipe, registry, source, target)
        log(f"translator {recipe.translator.name}: {translator.num_parameters():,} parameters")
        injection = build_plugin(registry, "injection", recipe.injection.name, recipe.injection.config)
        ctx = BuildContext(
            d_src=source.hidden_size, d_tgt=target.hidden_size, k=translator.k, teacher=recipe.teacher,
            labels=task.labels(), batch_size=recipe.train.batch_size, world_size=world_size(),
            source_tokenizer=source.tokenizer, target_tokenizer=target.tokenizer, target_embed=target.embed,
            target_embedding_matrix=target.model.get_input_embeddings().weight,
            target_rms=getattr(translator.config, "target_rms", None) or target.embedding_rms(), translator=translator,
        )
        torch.manual_seed(recipe.seed + 1)  # objective parameters (probe heads) get their own stream
        objectives = nn.ModuleDict(
            {name: build_plugin(registry, "objective", name, config, ctx) for name, config in recipe.objectives.items()}
        )
        objectives.to(target.device)
        bridge = Bridge(source, target, translator, injection, m.source_layer,
                        chat_template=bool(getattr(task.config, "chat_template", False)), source_layers=m.source_layers,
                        chat_kwargs=getattr(task.config, "chat_template_kwargs", None))
        if recipe.source.view == "generation":
            bridge.solutions = make_solutions(recipe, task, bridge, log, should_stop, upfront=solve_upfront)
            bridge.through_answer = recipe.source.through_answer
        if recipe.cache.source:
            bridge.source_cache = make_source_cache(recipe, task, bridge)
        experiment = cls(recipe, registry, task, bridge, objectives)
        if translator_dir is not None:
            experiment.load_translator(Path(translator_dir))
        else:  # a training-free translator fits what it needs on train items (a no-op for the others)
            with blame("translator", recipe.translator.name, translator):
                translator.fit(bridge, task, log)
        return experiment

    def build_loggers(self, run_dir: Path) -> list:
        """The recipe's experiment loggers (``jsonl`` first), each built with its config and the run folder."""
        return [build_plugin(self.registry, "logger", name, config, Path(run_dir))
                for name, config in self.recipe.loggers.items()]

    def load_translator(self, folder: Path) -> None:
        """Load saved weights, refusing a translator whose bridge card names another model pair."""
        from latentbridge.io.card import bridge_card, check_card, read_card

        saved = read_card(folder)
        if saved is not None:
            check_card(saved, bridge_card(self), f"the translator in {folder}")
        load_translator_weights(self.translator, folder)
        objectives = folder / OBJECTIVES_FILE
        if objectives.is_file():
            from latentbridge.io.weights import read_tensors

            self.objectives.load_state_dict(read_tensors(objectives))


def build_translator(recipe: Recipe, registry: Registry, source: FrozenModel, target: FrozenModel) -> Translator:
    """The recipe's translator with widths and scale filled in from the models (and checked against them)."""
    config = recipe.translator.config
    for key, actual, model in (("d_src", source.hidden_size, source), ("d_tgt", target.hidden_size, target)):
        given = getattr(config, key)
        if given is not None and given != actual:
            raise LatentBridgeError(
                f"translator.{key} is {given} but {model.name} has hidden size {actual}; "
                f"remove translator.{key} to use the model's"
            )
    config = dataclasses.replace(
        config,
        d_src=source.hidden_size,
        d_tgt=target.hidden_size,
        **({"target_rms": config.target_rms if config.target_rms is not None else target.embedding_rms()}
           if isinstance(config, SoftTokenConfig) else {}),
        **cache_fields(config, source, target),
        **({"n_source_layers": len(recipe.models.source_layers)}
           if recipe.models.source_layers and hasattr(config, "n_source_layers") else {}),
        # a translator whose parameters may follow the models' precision (c2c's fusers, as the authors keep them)
        **({"dtype": "bfloat16" if target.dtype == torch.bfloat16 else "float32"}
           if getattr(config, "dtype", None) == "auto" else {}),
    )
    torch.manual_seed(recipe.seed)  # initialisation depends on the seed only, not on what loaded before
    translator = build_plugin(registry, "translator", recipe.translator.name, config)
    return translator.to(target.device)


def cache_fields(config: object, source: FrozenModel, target: FrozenModel) -> dict[str, object]:
    """The key/value geometry fields of a translator's config (:class:`KVGeometryConfig`) left unset
    (``source_layers``, ``target_kv_heads``, ``kv_rms``, ...), read off each model's own cache. A config
    that names some of them by hand, without the mixin, gets them too, with a deprecation warning."""
    names = {f.name for f in dataclasses.fields(config)}
    geometry = {f.name for f in dataclasses.fields(KVGeometryConfig)} - {f.name for f in dataclasses.fields(TranslatorConfig)}
    if not isinstance(config, KVGeometryConfig) and names & geometry:
        warnings.warn(f"{type(config).__name__} names {', '.join(sorted(names & geometry))} by hand: inherit "
                      "latentbridge.KVGeometryConfig instead (filling them by name goes in 0.2)",
                      DeprecationWarning, stacklevel=2)
    fill: dict[str, object] = {}
    for side, model in (("source", source), ("target", target)):
        for fact in ("layers", "kv_heads", "head_dim"):
            name = f"{side}_{fact}"
            if name in names and getattr(config, name) is None:
                fill[name] = model.kv_geometry[fact]
    if "kv_rms" in names and config.kv_rms is None:
        fill["kv_rms"] = target.kv_geometry["kv_rms"]
    return fill


def build_plugin(registry: Registry, kind: str, name: str, *args: object) -> object:
    """Instantiate a plugin, remembering who provided it; a crash names the plugin and distribution."""
    info = registry.get(kind, name)
    with blame(kind, name, info):
        instance = info.cls(*args)
    instance.provider = info.provider
    return instance


def make_solutions(recipe: Recipe, task: Task, bridge: Bridge, log: Callable[[str], None],
                   should_stop: Callable[[], str | None] | None = None, upfront: bool = True):
    """The source's own solutions (``source.view: generation``), decoded as the evaluation decodes: those
    of the dev and test items and of the train items the run uses (``train.max_train_examples``) are
    made now, once, and cached on disk as they are made; any other prompt's when first read.
    ``should_stop`` (a stop signal's name, or None) ends the making early: see
    :class:`~latentbridge.bridge.solutions.SolvingStopped`."""
    from latentbridge.bridge.solutions import SourceSolutions
    from latentbridge.io.caches import cache_root

    e = recipe.eval
    root = Path(recipe.cache.dir).expanduser() if recipe.cache.dir else cache_root()
    solutions = SourceSolutions(bridge.source, bridge.source_encoder, max_new_tokens=e.max_new_tokens, stop=e.stop,
                                batch_size=e.batch_size, root=root, log=log)
    if should_stop is not None:
        solutions.should_stop = should_stop
    if upfront:
        with torch.no_grad():
            solutions.get(solved_prompts(recipe, task), save=True)
    solutions.should_stop = lambda: None  # later solving (a new prompt now and then) is the runner's to stop
    return solutions


def solved_prompts(recipe: Recipe, task: Task) -> list:
    """The prompts whose solutions a ``source.view: generation`` run makes before training."""
    train = task.examples("train")[: recipe.train.max_train_examples or None]
    return [task.prompt(x) for x in [*train, *task.examples("dev"), *task.examples("test")]]


def make_source_cache(recipe: Recipe, task: Task, bridge: Bridge):
    """The source hidden-state cache for this recipe's source, layer, dtype and prompts.

    Entries are found by split and a digest of the token ids the source reads (``bridge.source_rows``),
    never by example id; the hidden states are computed from those same prompts (``bridge.hidden_rows``)."""
    from latentbridge._version import __version__
    from latentbridge.bridge.source_cache import SPLITS, SourceCache
    from latentbridge.io.caches import cache_root
    from latentbridge.io.digest import prompts_digest

    splits = {split: task.examples(split) for split in SPLITS}
    key = {
        "latentbridge": __version__,
        "source": {"name": bridge.source.name, **bridge.source.fingerprint},
        "layer": bridge.source_layer,
        "dtype": str(bridge.source.dtype),
        "task": task.name,
        "task_config": task.config.read_settings(),
        "prefix": bridge.source_encoder.prefix,
        "prompts": {split: prompts_digest([e.id for e in examples], [task.prompt(e) for e in examples])
                    for split, examples in splits.items()},
    }
    root = Path(recipe.cache.dir).expanduser() if recipe.cache.dir else cache_root()
    return SourceCache(
        root, key, splits=splits, prompt=task.prompt,
        rows=lambda prompts: bridge.source_rows(prompts),
        compute=lambda prompts: bridge.hidden_rows(prompts),
    )
