"""Task ``arith``: synthetic grade-school word problems in GSM8K's format, generated from a seed.

The default seed and sizes give exactly the split the built-in tiny pair was trained on, so its test
items are unseen by both models. The dev split is drawn after the pair's whole training split, so it
holds no problem the pair trained on either. An override that would put one of the pair's training
problems into the test split (more test problems, another seed) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from latentbridge import LatentBridgeError, Task, TaskConfig, hookimpl, option
from latentbridge.api.task import Example, Split
from latentbridge.zoo import arith, specs

ZOO_SEED = 0  # the seed the built-in pair's training problems were drawn with


@dataclass
class ArithConfig(TaskConfig):
    data_seed: int = option(0, ge=0, help="generator seed; 0 is the split the built-in tiny pair was trained on")
    n_train: int = option(specs.N_TRAIN, gt=0, help="train problems generated")
    n_test: int = option(specs.N_TEST, gt=0, help="test problems generated (drawn first, disjoint from train)")


@cache
def zoo_training_questions() -> frozenset[str]:
    """Every question the built-in tiny pair was trained on."""
    train, _ = arith.generate_splits(ZOO_SEED, specs.N_TRAIN, specs.N_TEST)
    return frozenset(e["question"] for e in train)


@cache
def _splits(seed: int, n_train: int, n_test: int, n_dev: int) -> dict[str, list[Example]]:
    train, test, dev = arith.generate_splits(seed, n_train, n_test, n_dev=n_dev, dev_after=specs.N_TRAIN,
                                             avoid=zoo_training_questions())
    if seed != ZOO_SEED or n_test > specs.N_TEST:
        seen = [e["id"] for e in test if e["question"] in zoo_training_questions()]
        if seen:
            raise LatentBridgeError(
                f"task arith (data_seed={seed}, n_test={n_test}): {len(seen)} of the test problems "
                f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}) are problems the built-in tiny pair "
                f"was trained on; with the built-in pair use data_seed=0 and n_test <= {specs.N_TEST}"
            )
    return {
        split: [Example(id=r["id"], question=r["question"], answer=r["answer"], label=r["template"]) for r in rows]
        for split, rows in (("train", train), ("test", test), ("dev", dev))
    }


@cache
def _masked_train(seed: int, n_train: int, n_test: int, n_dev: int) -> frozenset[str]:
    return frozenset(arith.masked(e.question) for e in _splits(seed, n_train, n_test, n_dev)["train"])


class Arith(Task):
    """Synthetic one- and two-step arithmetic word problems (GSM8K format), labelled by template."""

    name = "arith"
    Config = ArithConfig
    native_splits = ("train", "dev", "test")

    def load(self, split: Split) -> list[Example]:
        c = self.config
        return _splits(c.data_seed, c.n_train, c.n_test, self.dev_size)[split]

    def subsets(self, split: Split) -> dict[str, str]:
        """``twin``: the question equals a training question once every name and pronoun is masked (the same
        numbers, items and answer about someone else: 119 of the 200 test questions); ``fresh``: the rest."""
        if split == "train":
            return {}
        seen = _masked_train(self.config.data_seed, self.config.n_train, self.config.n_test, self.dev_size)
        return {e.id: "twin" if arith.masked(e.question) in seen else "fresh" for e in self.examples(split)}


@hookimpl
def register_tasks(register):
    register(Arith)
