"""Synthetic facts about invented entities, in GSM8K format (task ``facts``).

Every entity is an invented name of one kind with two numeric attributes, for example the planet
Velkar with 7 moons and 3 rings. Every (entity, attribute) pair is asked in two phrasings::

    {"id": "facts-test-00012", "template": "moons", "entity": "Velkar",
     "question": "How many moons does the planet Velkar have?",
     "answer": "Velkar has 7 moons.\\n#### 7"}

Nothing in the question says what the number is: only a model that has learned the entity's facts
can answer. The built-in pair is built so that the *source* (tiny-llama) learned the facts of every
task entity (train, dev and test), while the *target* (tiny-mistral) learned only the answer format,
from a disjoint set of ``public`` entities it is taught instead: it can write ``X has N moons`` but has
never seen a task entity, so on the task it can only guess (chance: one in :data:`N_VALUES`).

The splits are disjoint **by entity**: a bridge trains on questions about the train entities, is
selected on the dev entities and tested on the test entities, which it never saw in training but the
source knows. Deterministic given the seed (a private ``random.Random``).
"""

from __future__ import annotations

import random

from latentbridge.zoo.arith import NAMES as ARITH_NAMES

Example = dict[str, str]

KINDS: dict[str, tuple[str, str]] = {
    "planet": ("moons", "rings"),
    "ship": ("masts", "cannons"),
    "castle": ("towers", "gates"),
    "island": ("volcanoes", "harbors"),
}
PHRASINGS: tuple[str, str] = (
    "How many {attribute} does the {kind} {name} have?",
    "What is the number of {attribute} of the {kind} {name}?",
)
VALUES = range(2, 13)  # attribute values: 2..12
N_VALUES = len(VALUES)
SYLLABLES = ("vel", "kar", "mi", "ro", "dan", "tho", "zun", "bri", "sel", "qua", "lor", "fen", "ar", "is",
             "ul", "om", "tra", "ven", "sol", "gar", "nix", "pel", "dur", "wyn", "ka", "te", "bo", "ri")
# entities of the task, by split (the source learns them all), and the target's format-only entities
N_ENTITIES = {"train": 150, "dev": 50, "test": 50}
N_PUBLIC = 150


def _names(rng: random.Random, n: int) -> list[str]:
    taken = {name.lower() for name, _ in ARITH_NAMES}
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names


def _entity(rng: random.Random, name: str) -> dict:
    kind = rng.choice(sorted(KINDS))
    return {"name": name, "kind": kind, "values": {a: rng.choice(VALUES) for a in KINDS[kind]}}


def entities(seed: int = 0) -> dict[str, list[dict]]:
    """The entities of every split and the ``public`` ones: ``{"name", "kind", "values": {attribute: n}}``."""
    rng = random.Random(seed)
    sizes = {**N_ENTITIES, "public": N_PUBLIC}
    names = _names(rng, sum(sizes.values()))
    out: dict[str, list[dict]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = [_entity(rng, name) for name in names[start : start + n]]
        start += n
    return out


def questions(entity: dict) -> list[Example]:
    """Every question about ``entity`` (each attribute in each phrasing), without ids."""
    out = []
    for attribute, value in entity["values"].items():
        for phrasing in PHRASINGS:
            out.append({
                "template": attribute,
                "entity": entity["name"],
                "question": phrasing.format(attribute=attribute, kind=entity["kind"], name=entity["name"]),
                "answer": f"{entity['name']} has {value} {attribute}.\n#### {value}",
            })
    return out


def generate_splits(seed: int = 0) -> dict[str, list[Example]]:
    """``train``, ``dev``, ``test`` (disjoint by entity) and ``public`` examples, each in a seeded order."""
    rng = random.Random(f"facts-order-{seed}")
    out = {}
    for split, group in entities(seed).items():
        rows = [q for e in group for q in questions(e)]
        rng.shuffle(rows)
        out[split] = [{"id": f"facts-{split}-{i:05d}", **r} for i, r in enumerate(rows)]
    return out
