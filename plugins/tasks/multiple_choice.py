"""Tasks ``multiple_choice`` (local JSONL in MMLU's or ARC's layout) and ``facts_mc`` (the ``facts``
task as multiple choice, for the tiny pair offline). Scoring: :mod:`latentbridge.api.choices`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from latentbridge import LatentBridgeError, hookimpl, option
from latentbridge.api.choices import MultipleChoiceConfig, MultipleChoiceTask
from latentbridge.api.task import Example, Split
from latentbridge.io.data import read_choice_items
from latentbridge.zoo import facts


@dataclass(kw_only=True)  # data_dir has no default
class MultipleChoiceFilesConfig(MultipleChoiceConfig):
    data_dir: str = option(help="folder holding the split files (relative paths: from the working directory)")
    train_file: str = option("train.jsonl", help="train split file inside data_dir (exemplars and training)")
    dev_file: str | None = option(None, help="dev split file inside data_dir; none: the dev split is carved from train")
    test_file: str = option("test.jsonl", help="test split file inside data_dir")
    layout: Literal["auto", "mmlu", "arc"] = option(
        "auto", help="record layout: 'mmlu' {question, choices, answer}, 'arc' {question, choices{text,label}, "
        "answerKey}; 'auto' reads each record by its keys")
    label_field: str | None = option("subject", help="record field holding a categorical label (MMLU's subject)")


class MultipleChoiceFiles(MultipleChoiceTask):
    """Multiple-choice questions read from local JSONL (MMLU, ARC, or anything in their layouts)."""

    name = "multiple_choice"
    Config = MultipleChoiceFilesConfig
    config: MultipleChoiceFilesConfig

    @property
    def native_splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train", "dev", "test") if self.config.dev_file else ("train", "test")

    def load_items(self, split: Split) -> list[Example]:
        c = self.config
        file = {"train": c.train_file, "dev": c.dev_file, "test": c.test_file}[split]
        items = read_choice_items(Path(c.data_dir).expanduser() / str(file), split, c.layout, c.label_field)
        return items[: self.dev_size] if split == "dev" else items


@dataclass
class FactsChoiceConfig(MultipleChoiceConfig):
    choice_format: Literal["letter", "text"] = option(
        "text", help="'text' (default): each choice is a full answer sentence ('Velkar has 7 moons.'), scored "
        "after the cue; 'letter': the sentences are listed as A-D and the letters scored")
    n_choices: int = option(4, ge=2, le=facts.N_VALUES, help="choices per question: the gold value and distractors")
    data_seed: int = option(0, ge=0, help="entity seed, as task facts' data_seed")


@cache
def _fact_items(seed: int, n_choices: int) -> dict[str, list[Example]]:
    out = {}
    for split, rows in facts.generate_splits(seed).items():
        if split == "public":
            continue
        items = []
        for r in rows:
            gold_value = int(r["answer"].rsplit("#### ", 1)[1])
            rng = random.Random(f"facts-mc-{seed}-{r['id']}")
            values = [gold_value, *rng.sample([v for v in facts.VALUES if v != gold_value], n_choices - 1)]
            rng.shuffle(values)
            choices = tuple(f"{r['entity']} has {v} {r['template']}." for v in values)
            items.append(Example(id=r["id"], question=r["question"], answer="", label=r["template"],
                                 choices=choices, gold=values.index(gold_value)))
        out[split] = items
    return out


class FactsChoice(MultipleChoiceTask):
    """Task ``facts`` as multiple choice: the same questions and splits (disjoint by entity), each with
    the gold sentence and ``n_choices - 1`` sentences naming other values, in a seeded order."""

    name = "facts_mc"
    Config = FactsChoiceConfig
    config: FactsChoiceConfig
    native_splits = ("train", "dev", "test")

    def load_items(self, split: Split) -> list[Example]:
        rows = _fact_items(self.config.data_seed, self.config.n_choices)[split]
        if split == "dev" and self.dev_size > len(rows):
            raise LatentBridgeError(f"eval.dev_n={self.dev_size} is too large for task 'facts_mc': its dev split "
                                    f"has {len(rows)} questions")
        return rows[: self.dev_size] if split == "dev" else rows


@hookimpl
def register_tasks(register):
    register(MultipleChoiceFiles)
    register(FactsChoice)
