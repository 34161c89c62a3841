"""The evaluation harness: every system on the same items, every item reported, baselines cached.

Systems: ``source`` (the source model alone on the prompt), ``target`` (the target alone), ``bridged``
(the recipe's injection mode) and ``relay`` (the source's worked solution handed to the target as
text after the question). Decoding is greedy, so evaluating the same weights twice gives identical
files. Baselines do not change during training: they are generated once per (models, task, prompt,
decoding settings) and cached on disk, never regenerated at each evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge._version import __version__
from latentbridge.api.task import Example, Prompt, Task
from latentbridge.bridge.core import Bridge
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.models import FrozenModel
from latentbridge.config.schema import config_to_dict
from latentbridge.eval.summary import summarize_records
from latentbridge.eval.systems import BASELINES, SYSTEMS, relay_prompt_text
from latentbridge.io.atomic import write_atomic, write_jsonl_atomic
from latentbridge.io.caches import cache_root
from latentbridge.io.digest import json_digest, prompts_digest
from latentbridge.train.distributed import gather_objects, is_main, rank, world_size
from latentbridge.train.precision import autocast


class Interrupted(Exception):
    """Raised between generation batches when the run was asked to stop (preemption)."""
Progress = Callable[[str, int, int], None]  # (what, items done in this call, items of `what` in all)


@dataclass
class EvalSettings:
    n: int
    batch_size: int
    max_new_tokens: int
    stop: list[str]
    systems: list[str]

    @classmethod
    def from_config(cls, config: Any) -> EvalSettings:
        """The settings of a recipe's ``eval`` section."""
        return cls(n=config.n, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                   stop=list(config.stop), systems=list(config.systems))


class Evaluator:
    def __init__(
        self,
        bridge: Bridge,
        task: Task,
        settings: EvalSettings,
        out_dir: Path,
        *,
        progress: Progress | None = None,
        use_cache: bool = True,
        should_stop: Callable[[], bool] | None = None,
        autocast: bool = True,
    ):
        self.bridge = bridge
        self.task = task
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.use_cache = use_cache
        self.should_stop = should_stop or (lambda: False)
        self.autocast = autocast
        test = task.examples("test")
        self.items: list[Example] = test[: settings.n]
        self.prompts: list[Prompt] = [task.prompt(e) for e in self.items]
        self._baselines: dict[str, list[str]] | None = None

    # -- generation ----------------------------------------------------------------------------------

    def _generate(self, model: FrozenModel, build: Callable[[slice], Any], what: str) -> list[str]:
        """Greedy outputs for every item, in fixed batches of ``batch_size`` consecutive items.

        Under torchrun the batches are dealt out whole, round-robin, and the outputs gathered: every
        item is generated exactly once, in the same batch as in a single process, so the files match."""
        n, size = len(self.items), self.settings.batch_size
        chunks = [slice(s, min(s + size, n)) for s in range(0, n, size)]
        world, me = world_size(), rank()
        mine: dict[int, list[str]] = {}
        for round_start in range(0, len(chunks), world):
            if self.should_stop():  # collective: every process asks the same number of times
                raise Interrupted
            index = round_start + me
            if index >= len(chunks):
                continue
            chunk = chunks[index]
            with autocast(model.device, model.dtype, self.autocast):
                outs = greedy_generate(
                    model.model, model.tokenizer, build(chunk), max_new_tokens=self.settings.max_new_tokens,
                    eos_ids=model.eos_ids(), stop=self.settings.stop,
                )
            mine[chunk.start] = [o.text for o in outs]
            if self.progress:
                self.progress(what, (chunk.stop - chunk.start) * world, n)
        merged: dict[int, list[str]] = {}
        for part in gather_objects(mine):
            merged.update(part)
        return [text for start in sorted(merged) for text in merged[start]]

    def _text_system(self, model: FrozenModel, rows: list[list[int]], what: str) -> list[str]:
        return self._generate(model, lambda c: self.bridge.text_inputs(model, rows[c]), what)

    def generate_bridged(self) -> list[str]:
        """The bridged system's outputs; the DiT's noise is seeded per item, so they are deterministic."""
        seeds = torch.tensor([item_seed(e.id) for e in self.items], dtype=torch.long)
        self.bridge.translator.eval()
        with torch.no_grad():
            return self._generate(
                self.bridge.target,
                lambda c: self.bridge.bridged_inputs(
                    self.bridge.soft_tokens(self.prompts[c], seeds[c], examples=self.items[c]),
                    self.prompts[c], with_answer=False,
                ),
                "bridged",
            )

    # -- baselines -----------------------------------------------------------------------------------

    def baseline_key(self) -> dict[str, Any]:
        s = self.settings
        return {
            "latentbridge": __version__,
            "source": self.bridge.source.fingerprint,
            "target": self.bridge.target.fingerprint,
            "dtypes": [str(self.bridge.source.dtype), str(self.bridge.target.dtype)],
            "task": self.task.name,
            "task_config": config_to_dict(self.task.config),
            "items": prompts_digest([e.id for e in self.items], self.prompts),
            "decoding": {"max_new_tokens": s.max_new_tokens, "stop": s.stop, "greedy": True},
        }

    def baselines(self) -> dict[str, list[str]]:
        """Outputs of the baseline systems asked for, generated once and cached on disk."""
        if self._baselines is not None:
            return self._baselines
        wanted = [s for s in BASELINES if s in self.settings.systems]
        key = self.baseline_key()
        digest = json_digest(key)
        cache_file = cache_root() / "baselines" / f"{digest}.json"
        cached: dict[str, list[str]] = {}
        if self.use_cache and cache_file.is_file():
            try:
                stored = json.loads(cache_file.read_text())
                if stored.get("key") == key:
                    cached = stored["outputs"]
            except (json.JSONDecodeError, KeyError):
                cached = {}
        outputs = dict(cached)
        missing = [s for s in wanted if s not in outputs]
        if "relay" in missing and "source" not in outputs:
            missing.insert(0, "source")
        b = self.bridge
        for system in dict.fromkeys(missing):
            if system == "source":
                rows = [b.source_encoder.prompt_ids(p) for p in self.prompts]
                outputs["source"] = self._text_system(b.source, rows, "source")
            elif system == "target":
                rows = [b.target_encoder.prompt_ids(p) for p in self.prompts]
                outputs["target"] = self._text_system(b.target, rows, "target")
            elif system == "relay":
                rows = [
                    b.target_encoder.text_ids(relay_prompt_text(p, out))
                    for p, out in zip(self.prompts, outputs["source"], strict=True)
                ]
                outputs["relay"] = self._text_system(b.target, rows, "relay")
        if missing and self.use_cache and is_main():
            write_atomic(cache_file, json.dumps({"key": key, "outputs": outputs}))
        self._baselines = {s: outputs[s] for s in wanted}
        return self._baselines

    # -- one evaluation ------------------------------------------------------------------------------

    def records(self, step: int, bridged: Sequence[str]) -> list[dict[str, Any]]:
        """One record per item, every system present (null where not run)."""
        outputs = {**self.baselines(), "bridged": list(bridged)}
        records = []
        task = self.task
        primary, *others = task.filters
        for index, example in enumerate(self.items):
            gold = task.gold_answer(example)
            record: dict[str, Any] = {
                "eval_step": step,
                "index": index,
                "id": example.id,
                "question": example.question,
                "gold_full_text": example.answer,
                "gold_extracted": gold,
                "primary_filter": primary,
            }
            for system in SYSTEMS:
                text = outputs[system][index] if system in outputs else None
                record[f"{system}_full"] = text
                record[f"{system}_extracted"] = None if text is None else task.extract_answer(text, primary)
                record[f"{system}_correct"] = None if text is None else task.is_correct(text, example, primary)
                for name in others:
                    record[f"{system}_correct_{name}"] = None if text is None else task.is_correct(text, example, name)
            records.append(record)
        return records

    def evaluate(self, step: int) -> dict[str, Any]:
        """Run every system, write ``eval_samples_step_<step>.jsonl``, return the step's summary."""
        records = self.records(step, self.generate_bridged())
        if is_main():
            write_jsonl_atomic(self.out_dir / f"eval_samples_step_{step}.jsonl", records)
        return {"step": step, **summarize_records(records)}


def item_seed(item_id: str) -> int:
    """A stable 63-bit seed per evaluation item (the DiT's sampling noise)."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little") >> 1
