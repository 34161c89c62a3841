"""Task ``arith``: synthetic grade-school word problems in GSM8K's format, generated from a seed.

The default seed and sizes give exactly the split the built-in tiny pair was trained on, so its test
items are unseen by both models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from latentbridge import Task, TaskConfig, hookimpl, option
from latentbridge.api.task import Example, Split
from latentbridge.zoo import arith, specs


@dataclass
class ArithConfig(TaskConfig):
    data_seed: int = option(0, ge=0, help="generator seed; 0 is the split the built-in tiny pair was trained on")
    n_train: int = option(specs.N_TRAIN, gt=0, help="train problems generated")
    n_test: int = option(specs.N_TEST, gt=0, help="test problems generated (drawn first, disjoint from train)")


@cache
def _splits(seed: int, n_train: int, n_test: int) -> dict[str, list[Example]]:
    train, test = arith.generate_splits(seed, n_train, n_test)
    return {
        split: [Example(id=r["id"], question=r["question"], answer=r["answer"], label=r["template"]) for r in rows]
        for split, rows in (("train", train), ("test", test))
    }


class Arith(Task):
    """Synthetic one- and two-step arithmetic word problems (GSM8K format), labelled by template."""

    name = "arith"
    Config = ArithConfig

    def load(self, split: Split) -> list[Example]:
        c = self.config
        return _splits(c.data_seed, c.n_train, c.n_test)[split]


@hookimpl
def register_tasks(register):
    register(Arith)
