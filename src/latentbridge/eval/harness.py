"""The evaluation harness: the recipe's systems on the same items of one split, every item reported.

The systems are plugins (``latentbridge list-plugins --kind system``; :mod:`latentbridge.api.system`),
named by the recipe's ``eval.systems``: the built-ins are ``source`` and ``target`` (each model alone),
``bridged`` (the recipe's injection of the translator's message), the controls ``shuffled``, ``null``,
``covgauss`` and ``randomrot``, ``relay`` (the source's worked solution handed to the target as text),
``skyline`` (the target reads everything the source reads) and ``two_stage`` (C2C's text-to-text
baseline). Decoding is greedy and the DiT's noise is seeded per item, so evaluating the same weights
twice gives identical files. Baselines (systems that read nothing trained) are generated once and
cached (:mod:`latentbridge.eval.baselines`). Periodic evaluations during training read the ``dev``
split; the final figures read ``test``.

Every record has a field set for each system it reports, null where a system did not run: the six
systems every file has held from the start (``always_recorded``) and any other the recipe names, in the
systems' ``rank`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from latentbridge.config.systems import in_record_order
from latentbridge.eval.choices import choice_fields
from latentbridge.eval.context import EvalContext, EvalSettings, Interrupted, Progress, item_seed
from latentbridge.eval.summary import summarize_records
from latentbridge.io.atomic import write_jsonl_atomic
from latentbridge.registry.host import get_registry
from latentbridge.runtime.distributed import is_main

__all__ = ["EvalSettings", "Evaluator", "Interrupted", "Progress", "eval_file_name", "item_seed", "recorded_systems"]


def eval_file_name(split: str, step: int, label: str | None = None) -> str:
    """``eval_samples_<split>[_<label>]_step_<N>.jsonl``: the split (and which weights) in the name."""
    return f"eval_samples_{split}{'_' + label if label else ''}_step_{step}.jsonl"


def recorded_systems(wanted: Sequence[str]) -> list[str]:
    """The systems an evaluation file has fields for: every ``always_recorded`` one and those ``wanted``,
    in rank order (then by name)."""
    registry = get_registry()
    names = {n for n in registry.names("system") if registry.get("system", n).cls.always_recorded} | set(wanted)
    return in_record_order(names, registry)


class Evaluator(EvalContext):
    """Runs the recipe's systems on one split's items and writes the per-item records (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.recorded = recorded_systems(self.settings.systems)
        self.systems = {name: self.system(name) for name in self.recorded if name in self.settings.systems}

    def _run(self, name: str, kind: str = "outputs") -> Any:
        """One system's outputs (``kind="scores"``: its choice scores); a baseline's from the cache."""
        system = self.systems[name]
        compute = (lambda: system.generate(self)) if kind == "outputs" else (lambda: system.score(self))
        if system.role == "baseline":
            return self.cached(system.cache_entry(), compute, kind)
        return compute()

    def _ordered(self) -> list[str]:
        """The systems asked for: the baselines first (cached), then the rest, each in record order."""
        names = list(self.systems)
        return [n for n in names if self.systems[n].role == "baseline"] + \
               [n for n in names if self.systems[n].role != "baseline"]

    # -- what the harness runs ------------------------------------------------------------------------

    def baselines(self) -> dict[str, list[str]]:
        """Outputs of the baseline systems asked for, generated once and cached on disk."""
        return {n: self._run(n) for n in self._ordered() if self.systems[n].role == "baseline"}

    def generate_bridged(self) -> list[str]:
        """The bridged system's outputs (each item's message from its own source states)."""
        return self.system("bridged").generate(self)

    def outputs(self) -> dict[str, list[str] | None]:
        """Every system asked for: the cached baselines, then the bridged system and its controls."""
        return {n: self._run(n) for n in self._ordered()}

    def scores(self) -> dict[str, list[list[float]] | None]:
        """Every system's choice scores (multiple-choice tasks; the baselines' cached)."""
        return {n: self._run(n, "scores") for n in self._ordered()}

    @torch.no_grad()
    def message_sizes(self, outputs: dict[str, Sequence[str] | None]) -> dict[str, list[tuple[int, int]]]:
        """Per item, the bytes and token positions of what crosses from source to target, for every
        system that measures it (:meth:`~latentbridge.api.system.System.message_sizes`)."""
        sizes = {}
        for name in self.recorded:
            if name in self.systems and (measured := self.systems[name].message_sizes(self, outputs)) is not None:
                sizes[name] = measured
        return sizes

    # -- records ---------------------------------------------------------------------------------------

    def records(self, step: int, outputs: dict[str, Sequence[str] | None] | Sequence[str],
                sizes: dict[str, list[tuple[int, int]]] | None = None,
                scores: dict[str, list[list[float]] | None] | None = None) -> list[dict[str, Any]]:
        """One record per item, every recorded system present (null where not run). ``outputs``: each
        system's outputs (baselines are filled in), or the bridged outputs alone; ``sizes``:
        :meth:`message_sizes`; ``scores``: a multiple-choice task's :meth:`scores` (computed here when not given)."""
        if self.choices and scores is None:
            scores = self.scores()
        given = {"bridged": list(outputs)} if not isinstance(outputs, dict) else dict(outputs)
        outputs = {**self.baselines(), **given}
        task = self.task
        primary, *others = task.filters
        subsets = task.subsets(self.split)
        records = []
        for index, example in enumerate(self.items):
            record: dict[str, Any] = {
                "eval_step": step,
                "split": self.split,
                "index": index,
                "id": example.id,
                "question": example.question,
                "gold_full_text": example.answer,
                "gold_extracted": task.gold_answer(example),
                **({"gold_answers": list(example.answers),  # a free-text task's golds: any one is right
                    "gold_answers_extracted": [task.extract_answer(a, primary) for a in example.answers]}
                   if len(example.answers) > 1 else {}),
                **({"choices": list(example.choices), "gold_index": example.gold} if self.choices else {}),
                "primary_filter": primary,
                **({"metrics": list(task.metrics)} if task.metrics else {}),
                **({"subset": subsets[example.id]} if subsets else {}),
            }
            for system in self.recorded:
                texts = outputs.get(system)
                text = texts[index] if texts is not None else None
                record[f"{system}_full"] = text
                if self.choices:
                    per_item = (scores or {}).get(system)
                    record.update(choice_fields(task, example, system, None if per_item is None else per_item[index], text))
                    continue
                record[f"{system}_extracted"] = None if text is None else task.extract_answer(text, primary)
                record[f"{system}_correct"] = None if text is None else task.is_correct(text, example, primary)
                for name in others:
                    record[f"{system}_correct_{name}"] = None if text is None else task.is_correct(text, example, name)
                for metric in task.metrics:
                    record[f"{system}_{metric}"] = None if text is None else task.item_metric(text, example, metric)
            for system in self.recorded:
                if system in self.systems:
                    record.update(self.systems[system].item_fields(self, index, outputs))
            for system, per_item in (sizes or {}).items():
                record[f"{system}_message_bytes"], record[f"{system}_message_tokens"] = per_item[index]
            records.append(record)
        return records

    def evaluate(self, step: int, label: str | None = None) -> dict[str, Any]:
        """Run every system, write ``eval_samples_<split>[_<label>]_step_<step>.jsonl``, return the summary."""
        outputs = self.outputs()
        records = self.records(step, outputs, self.message_sizes(outputs), self.scores() if self.choices else None)
        if is_main():
            write_jsonl_atomic(self.out_dir / eval_file_name(self.split, step, label), records)
        return {"step": step, "split": self.split, **({"weights": label} if label else {}), **summarize_records(records)}
