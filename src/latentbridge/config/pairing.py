"""Problems between recipe sections that only their plugins together reveal: the translator's message and
the injection mode (and objectives) that take it, the source layers a translator reads, and a context split's
needs (a translator that fuses the target's own prompt, one that translates the source's context)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentbridge.registry.host import Registry


def layers_problems(models: Any, specs: Mapping[str, Any], cache: Any, registry: Registry) -> list[str]:
    """``models.source_layers`` needs a translator that reads several layers, and no source cache."""
    layers = getattr(models, "source_layers", None)
    translator = specs.get("translator")
    if not layers or translator is None:
        return []
    problems = []
    if not registry.get("translator", translator.name).cls.reads_layers:
        readers = [n for n in registry.names("translator") if registry.get("translator", n).cls.reads_layers]
        problems.append(f"models.source_layers: translator '{translator.name}' reads one layer (models.source_layer); "
                        f"translators that read several: {', '.join(readers) or 'none'}")
    if len(set(layers)) != len(layers):
        problems.append(f"models.source_layers: a layer is named twice in {layers}")
    if cache is not None and cache.source:
        problems.append("models.source_layers: the source cache keeps one layer; set cache.source to false")
    return problems


def context_problems(specs: Mapping[str, Any], registry: Registry) -> list[str]:
    """A translator that fuses the target's own prompt positions (c2c) cannot carry a context the target
    never reads (a context split: ``task.target_reads: question``); one that translates the source's
    context (kv_translate) needs one."""
    task, translator = specs.get("task"), specs.get("translator")
    if task is None or translator is None:
        return []
    cls = registry.get("translator", translator.name).cls
    split = getattr(task.config, "target_reads", None) == "question"
    if cls.needs_context and not split:
        return [f"translator: '{translator.name}' translates the source's context, and task '{task.name}' "
                f"{'has no context' if not hasattr(task.config, 'target_reads') else 'lets the target read it'}; "
                f"use a context-split task (passages, qa_context) with task.target_reads=question"]
    if not split or not cls.fuses_target_prompt:
        return []
    return [f"translator: '{translator.name}' fuses the target's own positions of the prompt, and with "
            f"task.target_reads=question the target never reads the context; use kv_translate, kv_prefix or a "
            f"soft-token translator, or set task.target_reads=context_and_question"]


def message_problems(specs: Mapping[str, Any], objectives: Mapping[str, Any], curriculum: Any,
                      registry: Registry) -> list[str]:
    """The translator's message kind must be one the injection mode places and every objective trains."""
    translator, injection = specs.get("translator"), specs.get("injection")
    if translator is None:
        return []
    kind = registry.get("translator", translator.name).cls.emits
    modes = [("injection", injection.name)] if injection is not None else []
    if curriculum is not None:
        modes.append(("curriculum.text_injection", curriculum.text_injection))
    problems = []
    for path, mode in modes:
        cls = registry.get("injection", mode).cls if mode in registry.names("injection") else None
        if cls is not None and not cls.takes(kind):
            takes = [n for n in registry.names("injection") if registry.get("injection", n).cls.takes(kind)]
            problems.append(f"{path}: '{mode}' does not place the {kind} message of translator '{translator.name}' "
                            f"(it takes {', '.join(cls.accepts)}); use one of: {', '.join(takes) or 'none'}")
    caching = [mode for _, mode in modes if mode in registry.names("injection")
               and registry.get("injection", mode).cls.caches_lead]
    for name in objectives:
        if caching and not registry.get("objective", name).cls.after_cached_lead:
            problems.append(f"objectives.{name}: needs every position of a row in the target's input, and injection "
                            f"'{caching[0]}' reads the header as a cache; use soft_plus_text")
        trains = registry.get("objective", name).cls.messages
        if trains is not None and kind not in trains:
            problems.append(f"objectives.{name}: reads {', '.join(trains)}, not the {kind} message of translator "
                            f"'{translator.name}' (objectives for any message: kl, nll)")
    return problems
