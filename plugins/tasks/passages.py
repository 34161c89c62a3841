"""Task ``passages``: the context split. The source reads a passage of invented facts and a question about
one of them; the target reads the question only (``task.target_reads: question``), so what it answers
beyond a guess (one of 11 values) came through the message.

Every entity is fresh: an invented name used once in the whole data set, and train, dev and test never
share one, so nothing can be memorised; the built-in models learned in-context lookup from other
(``public``) passages. Answers are in GSM8K format (``Velkar has 7 moons.\\n#### 7``). See
:mod:`latentbridge.zoo.passages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from latentbridge import ContextTask, ContextTaskConfig, LatentBridgeError, hookimpl, option
from latentbridge.api.task import Example, Split
from latentbridge.zoo import passages


@dataclass
class PassagesConfig(ContextTaskConfig):
    n_facts: int = option(4, ge=1, le=passages.MAX_FACTS,
                          help="sentences in each context: the fact asked about and n_facts - 1 distractors")
    data_seed: int = option(0, ge=0, help="seed of the invented passages")
    n_train: int = option(passages.SPLIT_SIZES["train"], ge=1, le=20_000, help="train items")


@cache
def _split(split: str, seed: int, n_facts: int, n: int) -> tuple[Example, ...]:
    rows = passages.generate_split(split, seed, n=n, n_facts=n_facts)
    return tuple(Example(id=r["id"], question=r["query"], answer=r["answer"], label=str(r["n_facts"]),
                         context=r["context"]) for r in rows)


class Passages(ContextTask):
    """A passage of invented facts (``n_facts`` sentences) and a question about one; entities fresh per item."""

    name = "passages"
    Config = PassagesConfig
    native_splits = ("train", "dev", "test")

    def load(self, split: Split) -> list[Example]:
        c = self.config
        if split == "dev" and self.dev_size > passages.SPLIT_SIZES["dev"] * 5:
            raise LatentBridgeError(f"eval.dev_n={self.dev_size} is too large for task 'passages' (at most "
                                    f"{passages.SPLIT_SIZES['dev'] * 5})")
        n = {"train": c.n_train, "dev": self.dev_size, "test": passages.SPLIT_SIZES["test"]}[split]
        try:
            return list(_split(split, c.data_seed, c.n_facts, n))
        except passages.NamesExhausted as error:  # every entity is fresh: the split's names ran out
            lower = {"train": "task.n_train or task.n_facts", "dev": "eval.dev_n or task.n_facts"}.get(split, "task.n_facts")
            raise LatentBridgeError(f"{error} ({n:,} {split} items of {c.n_facts} facts: lower {lower})") from None


@hookimpl
def register_tasks(register):
    register(Passages)
