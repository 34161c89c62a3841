"""The evaluation harness: every system on the same items of one split, every item reported.

Systems: ``source`` (the source model alone on the prompt), ``target`` (the target alone), ``bridged``
(the recipe's injection mode), the controls ``shuffled`` and ``null`` (see
:mod:`latentbridge.eval.controls`), and ``relay`` (the source's worked solution handed to the target as
text after the question). Decoding is greedy and the DiT's noise is seeded per item, so evaluating the
same weights twice gives identical files. Baselines are generated once and cached
(:mod:`latentbridge.eval.baselines`). Periodic evaluations during training read the ``dev`` split;
the final figures read ``test``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge.api.choices import MultipleChoiceTask
from latentbridge.api.task import Example, Prompt, Task
from latentbridge.bridge.core import Bridge
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.models import FrozenModel
from latentbridge.bridge.solutions import relay_continuation
from latentbridge.eval.baselines import BaselineCache, baseline_key, generate_baselines
from latentbridge.eval.choices import bridged_rows, choice_fields, relay_prompt, score_rows, text_rows
from latentbridge.eval.controls import derangement, null_prompt
from latentbridge.eval.summary import summarize_records
from latentbridge.eval.systems import BASELINES, SYSTEMS
from latentbridge.io.atomic import write_jsonl_atomic
from latentbridge.io.digest import prompts_digest
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
    def from_config(cls, config: Any, split: str = "test") -> EvalSettings:
        """The settings of a recipe's ``eval`` section for ``split`` (``n`` items of test, ``dev_n`` of dev)."""
        n = config.dev_n if split == "dev" else config.n
        return cls(n=n, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                   stop=list(config.stop), systems=list(config.systems))


def eval_file_name(split: str, step: int, label: str | None = None) -> str:
    """``eval_samples_<split>[_<label>]_step_<N>.jsonl``: the split (and which weights) in the name."""
    return f"eval_samples_{split}{'_' + label if label else ''}_step_{step}.jsonl"


class Evaluator:
    def __init__(
        self,
        bridge: Bridge,
        task: Task,
        settings: EvalSettings,
        out_dir: Path,
        *,
        split: str = "test",
        seed: int = 0,
        progress: Progress | None = None,
        use_cache: bool = True,
        should_stop: Callable[[], bool] | None = None,
        autocast: bool = True,
    ):
        self.bridge = bridge
        self.task = task
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.split = split
        self.progress = progress
        self.use_cache = use_cache
        self.should_stop = should_stop or (lambda: False)
        self.autocast = autocast
        self.items: list[Example] = task.examples(split)[: settings.n]
        self.prompts: list[Prompt] = [task.prompt(e) for e in self.items]
        self.seeds = torch.tensor([item_seed(e.id) for e in self.items], dtype=torch.long)
        self.shuffle = derangement(len(self.items), seed)  # shuffled: item i reads item shuffle[i]'s source
        self._baselines: dict[str, list[str]] | None = None
        self._baseline_scores: dict[str, list[list[float]]] | None = None
        self._source_outputs: list[str] | None = None
        self.choices = isinstance(task, MultipleChoiceTask)  # items scored by each choice's log-likelihood

    # -- generation ----------------------------------------------------------------------------------

    def _deal(self, work: Callable[[slice], list[Any]], what: str) -> list[Any]:
        """``work(chunk)`` for every item, in fixed batches of ``batch_size`` consecutive items.

        Under torchrun the batches are dealt out whole, round-robin, and the results gathered: every
        item is computed exactly once, in the same batch as in a single process, so the files match."""
        n, size = len(self.items), self.settings.batch_size
        chunks = [slice(s, min(s + size, n)) for s in range(0, n, size)]
        world, me = world_size(), rank()
        mine: dict[int, list[Any]] = {}
        for round_start in range(0, len(chunks), world):
            if self.should_stop():  # collective: every process asks the same number of times
                raise Interrupted
            index = round_start + me
            if index >= len(chunks):
                continue
            chunk = chunks[index]
            mine[chunk.start] = work(chunk)
            if self.progress:
                self.progress(what, (chunk.stop - chunk.start) * world, n)
        merged: dict[int, list[Any]] = {}
        for part in gather_objects(mine):
            merged.update(part)
        return [result for start in sorted(merged) for result in merged[start]]

    def _generate(self, model: FrozenModel, build: Callable[[slice], Any], what: str) -> list[str]:
        """Greedy outputs for every item (batched as :meth:`_deal` says)."""
        def work(chunk: slice) -> list[str]:
            with autocast(model.device, model.dtype, self.autocast):
                outs = greedy_generate(
                    model.model, model.tokenizer, build(chunk), max_new_tokens=self.settings.max_new_tokens,
                    eos_ids=model.eos_ids(), stop=self.settings.stop,
                )
            return [o.text for o in outs]

        return self._deal(work, what)

    def _score(self, model: FrozenModel, rows_for: Callable[[slice], Any], what: str) -> list[list[float]]:
        """Every item's choice scores (multiple-choice tasks): ``rows_for(chunk)`` gives the chunk's
        :data:`~latentbridge.eval.choices.RowsFor`."""
        def work(chunk: slice) -> list[list[float]]:
            counts = [len(e.choices) for e in self.items[chunk]]
            with autocast(model.device, model.dtype, self.autocast), torch.no_grad():
                return score_rows(model.model, rows_for(chunk), counts)

        return self._deal(work, f"{what} (choices)")

    def _text_system(self, model: FrozenModel, rows: list[list[int]], what: str) -> list[str]:
        return self._generate(model, lambda c: self.bridge.text_inputs(model, rows[c]), what)

    def _bridged_system(self, what: str, source: Callable[[slice], tuple[list[Prompt], Any, torch.Tensor]]) -> list[str]:
        """The target reading each item's own text and a message from ``source(chunk)``: the prompts
        the source reads, the examples (for the source cache, or None) and the per-row seeds."""
        def build(chunk: slice):
            return self.bridge.bridged_inputs(self._message(source, chunk), self.prompts[chunk], with_answer=False)

        self.bridge.translator.eval()
        with torch.no_grad():
            return self._generate(self.bridge.target, build, what)

    # where each system's message comes from: (the prompts the source reads, their examples, seeds) per chunk

    def _message(self, source: Callable[[slice], tuple[list[Prompt], Any, torch.Tensor]], chunk: slice) -> Any:
        """The translator's message for ``chunk``, from what ``source(chunk)`` says the source reads."""
        prompts, examples, seeds = source(chunk)
        return self.bridge.message(prompts, seeds, examples=examples)

    def _own_source(self, chunk: slice):
        return self.prompts[chunk], self.items[chunk], self.seeds[chunk]

    def _shuffled_source(self, chunk: slice):
        """Item i's message is the one item ``shuffle[i]`` gets (its source states and its seed)."""
        others = self.shuffle[chunk]
        return [self.prompts[j] for j in others], [self.items[j] for j in others], self.seeds[others]

    def _null_source(self, chunk: slice):
        """The source reads the prompt without the question."""
        return [null_prompt(p) for p in self.prompts[chunk]], None, self.seeds[chunk]

    def generate_bridged(self) -> list[str]:
        """The bridged system: each item's message from its own source states."""
        return self._bridged_system("bridged", self._own_source)

    def generate_shuffled(self) -> list[str] | None:
        """The ``shuffled`` control (:meth:`_shuffled_source`); None with fewer than two items."""
        return None if self.shuffle is None else self._bridged_system("shuffled", self._shuffled_source)

    def generate_null(self) -> list[str]:
        """The ``null`` control: the message from the source reading the prompt without the question."""
        return self._bridged_system("null", self._null_source)

    # -- multiple choice: every system's log-likelihood of each choice --------------------------------

    def _bridged_scores(self, what: str, source: Callable[[slice], tuple[list[Prompt], Any, torch.Tensor]]) -> list[list[float]]:
        """The bridged system's (or a control's) choice scores, its message from ``source(chunk)``."""
        def rows_for(chunk: slice):
            return bridged_rows(self.bridge, self._message(source, chunk), self.task, self.prompts[chunk], self.items[chunk])

        self.bridge.translator.eval()
        with torch.no_grad():
            return self._score(self.bridge.target, rows_for, what)

    def _baseline_scores_of(self, system: str, outputs: dict[str, list[str]]) -> list[list[float]]:
        b, task = self.bridge, self.task
        model, encoder = (b.source, b.source_encoder) if system == "source" else (b.target, b.target_encoder)
        prompts = self.prompts
        if system == "relay":
            prompts = [relay_prompt(p, relay_continuation(p, out)) for p, out in zip(self.prompts, outputs["source"], strict=True)]
        return self._score(model, lambda c: text_rows(model, encoder, task, prompts[c], self.items[c]), system)

    def baseline_scores(self) -> dict[str, list[list[float]]]:
        """The baseline systems' choice scores, computed once and cached on disk beside their outputs."""
        if self._baseline_scores is None:
            wanted = [s for s in BASELINES if s in self.settings.systems]
            cache = BaselineCache({**self.baseline_key(), "scores": "choice log-likelihoods"}, enabled=self.use_cache)
            self.baselines()
            texts = {"source": self._source_outputs} if self._source_outputs is not None else {}
            scores, computed = generate_baselines(wanted, cache.load(), lambda s, _: self._baseline_scores_of(s, texts))
            if computed and is_main():
                cache.save(scores)
            self._baseline_scores = {s: scores[s] for s in wanted}
        return self._baseline_scores

    def scores(self) -> dict[str, list[list[float]] | None]:
        """Every system's choice scores (the baselines cached), the controls' where they are asked for."""
        out: dict[str, list[list[float]] | None] = dict(self.baseline_scores())
        wanted = self.settings.systems
        out["bridged"] = self._bridged_scores("bridged", self._own_source)
        if "shuffled" in wanted and self.shuffle is not None:
            out["shuffled"] = self._bridged_scores("shuffled", self._shuffled_source)
        if "null" in wanted:
            out["null"] = self._bridged_scores("null", self._null_source)
        return out

    # -- baselines -----------------------------------------------------------------------------------

    def baseline_key(self) -> dict[str, Any]:
        return baseline_key(self.bridge, self.task, prompts_digest([e.id for e in self.items], self.prompts),
                            self.settings)

    def _generate_baseline(self, system: str, outputs: dict[str, list[str]]) -> list[str]:
        b = self.bridge
        if system == "source":
            return self._text_system(b.source, [b.source_encoder.prompt_ids(p) for p in self.prompts], "source")
        if system == "target":
            return self._text_system(b.target, [b.target_encoder.prompt_ids(p) for p in self.prompts], "target")
        rows = [b.target_encoder.continued_ids(p, relay_continuation(p, out))
                for p, out in zip(self.prompts, outputs["source"], strict=True)]
        return self._text_system(b.target, rows, "relay")

    def baselines(self) -> dict[str, list[str]]:
        """Outputs of the baseline systems asked for, generated once and cached on disk."""
        if self._baselines is None:
            wanted = [s for s in BASELINES if s in self.settings.systems]
            cache = BaselineCache(self.baseline_key(), enabled=self.use_cache)
            outputs, generated = generate_baselines(wanted, cache.load(), self._generate_baseline)
            if generated and is_main():
                cache.save(outputs)
            self._baselines = {s: outputs[s] for s in wanted}
            self._source_outputs = outputs.get("source")  # the relay's source, also when source is not reported
        return self._baselines

    # -- one evaluation ------------------------------------------------------------------------------

    def outputs(self) -> dict[str, list[str] | None]:
        """Every system asked for: the cached baselines, then the bridged system and its controls."""
        out: dict[str, list[str] | None] = dict(self.baselines())
        wanted = self.settings.systems
        out["bridged"] = self.generate_bridged()
        if "shuffled" in wanted:
            out["shuffled"] = self.generate_shuffled()
        if "null" in wanted:
            out["null"] = self.generate_null()
        return out

    @torch.no_grad()
    def message_sizes(self, outputs: dict[str, Sequence[str] | None]) -> dict[str, list[tuple[int, int]]]:
        """Per item, the bytes and token positions of what crosses from source to target: the bridged
        system's message (:meth:`~latentbridge.api.messages.Message.nbytes`) and the relay's text (its
        UTF-8 bytes and target tokens)."""
        sizes: dict[str, list[tuple[int, int]]] = {}
        self.bridge.translator.eval()
        bridged: list[tuple[int, int]] = []
        for start in range(0, len(self.items), self.settings.batch_size):
            chunk = slice(start, start + self.settings.batch_size)
            message = self._message(self._own_source, chunk)
            bridged += list(zip(message.nbytes(), message.ntokens(), strict=True))
        sizes["bridged"] = bridged
        if outputs.get("relay") is not None and outputs.get("source") is not None:
            texts = [relay_continuation(p, out) for p, out in zip(self.prompts, outputs["source"], strict=True)]
            sizes["relay"] = [(len(t.encode()), len(self.bridge.target_encoder.ids(t))) for t in texts]
        return sizes

    def records(self, step: int, outputs: dict[str, Sequence[str] | None] | Sequence[str],
                sizes: dict[str, list[tuple[int, int]]] | None = None,
                scores: dict[str, list[list[float]] | None] | None = None) -> list[dict[str, Any]]:
        """One record per item, every system present (null where not run). ``outputs``: each system's
        outputs (baselines are filled in), or the bridged outputs alone; ``sizes``: :meth:`message_sizes`;
        ``scores``: a multiple-choice task's :meth:`scores` (computed here when not given)."""
        if self.choices and scores is None:
            scores = self.scores()
        given = {"bridged": list(outputs)} if not isinstance(outputs, dict) else dict(outputs)
        outputs = {**self.baselines(), **given}
        records = []
        task = self.task
        primary, *others = task.filters
        for index, example in enumerate(self.items):
            record: dict[str, Any] = {
                "eval_step": step,
                "split": self.split,
                "index": index,
                "id": example.id,
                "question": example.question,
                "gold_full_text": example.answer,
                "gold_extracted": task.gold_answer(example),
                **({"choices": list(example.choices), "gold_index": example.gold} if self.choices else {}),
                "primary_filter": primary,
            }
            for system in SYSTEMS:
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
            if self.shuffle is not None and outputs.get("shuffled") is not None:
                record["shuffled_source_id"] = self.items[self.shuffle[index]].id
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


def item_seed(item_id: str) -> int:
    """A stable 63-bit seed per evaluation item (the DiT's sampling noise)."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little") >> 1
