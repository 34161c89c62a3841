"""Task ``facts``: questions about invented entities whose numeric facts the built-in source knows and
the built-in target does not (GSM8K format: ``Velkar has 7 moons.\\n#### 7``).

The splits are disjoint by entity: train 150 entities (600 questions), dev 50 (200), test 50 (200);
each entity has two attributes, each asked in two phrasings. The built-in tiny-llama learned the facts of
every one of these entities; tiny-mistral learned only the answer format, from other (``public``)
entities, so it can answer no question here except by a guess (one of 11 values). A bridge that lifts
the target above that reads the facts from the source: it trained on other entities than it is tested
on. See :mod:`latentbridge.zoo.facts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from latentbridge import LatentBridgeError, Task, TaskConfig, hookimpl, option
from latentbridge.api.task import Example, Split
from latentbridge.zoo import facts


@dataclass
class FactsConfig(TaskConfig):
    data_seed: int = option(0, ge=0, help="entity seed: 0 is the entities the built-in tiny-llama learned "
                            "(a pair built with `latentbridge zoo build --seed N` learned seed N's)")


@cache
def _splits(seed: int) -> dict[str, list[Example]]:
    return {
        split: [Example(id=r["id"], question=r["question"], answer=r["answer"], label=r["template"]) for r in rows]
        for split, rows in facts.generate_splits(seed).items() if split != "public"
    }


class Facts(Task):
    """Numeric facts about invented entities (planets, ships, castles, islands); splits disjoint by entity."""

    name = "facts"
    Config = FactsConfig
    native_splits = ("train", "dev", "test")

    def load(self, split: Split) -> list[Example]:
        rows = _splits(self.config.data_seed)[split]
        if split != "dev":
            return rows
        if self.dev_size > len(rows):
            raise LatentBridgeError(f"eval.dev_n={self.dev_size} is too large for task 'facts': its dev split "
                                    f"has {len(rows)} questions (about {facts.N_ENTITIES['dev']} entities)")
        return rows[: self.dev_size]


@hookimpl
def register_tasks(register):
    register(Facts)
