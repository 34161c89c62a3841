"""Synthetic passages of invented facts, with a question about one of them (task ``passages``).

Each item has a *context*: ``n_facts`` sentences about invented entities, each naming the fact before its
value (``The moons of the planet Bovelika: 7.``), and a *question* about one of those facts::

    {"id": "passages-test-00012", "n_facts": 4, "entity": "Bovelkar",
     "context": "The masts of the ship Tasoliru: 3. The moons of the planet Bovelkar: 7. ...",
     "query": "How many moons does the planet Bovelkar have?",
     "question": "<context> <query>",
     "answer": "Bovelkar has 7 moons.\\n#### 7"}

The other sentences are distractors: other entities (often of the same kind and with the same
attribute as the one asked, so only the name tells them apart) and, now and then, the asked entity's
other attribute. Every entity is fresh: an invented name used once in the whole data set, so nothing
about it can be memorised; what a model answers it must read from the context. Without the context a
model can only guess (chance: one in :data:`N_VALUES`).

Names are three syllables (of :data:`NAME_SYLLABLES`) long and fall in a split by a hash of the name (:func:`split_of`), so the
``public`` items (what the zoo's models learn the format from), ``train``, ``dev`` and ``test`` never
share an entity, whatever the seed or the number of facts. Names of the ``facts`` task's entities and of
``arith``'s people are never used. Deterministic given the seed (a private ``random.Random``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random

from latentbridge.zoo import facts

Example = dict
VALUES = facts.VALUES
N_VALUES = facts.N_VALUES
MAX_FACTS = 16
SPLIT_SIZES = {"train": 4000, "dev": 200, "test": 200}
N_PUBLIC = 24_000  # the items the zoo's models learn in-context lookup from (n_facts drawn 1..MAX_FACTS)
# which share of the name space each split draws from (by a hash of the name): disjoint by construction
_BUCKETS = (("public", 60), ("train", 30), ("dev", 5), ("test", 5))
SENTENCE = "The {attribute} of the {kind} {name}: {value}."  # the value last: what precedes it names the fact
# names are three syllables of these 70 (consonant, vowel): rarely does one end like another in a passage
NAME_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
# the number of facts of a public item (what the models learn from): short passages often, up to 16 now and then
PUBLIC_FACTS = (1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6, 8, 8, 10, 12, 14, 16)


def split_of(name: str) -> str:
    """The split a name belongs to (a fixed hash of its lower-case spelling)."""
    h = int.from_bytes(hashlib.sha256(name.lower().encode()).digest()[:4], "little") % 100
    for split, share in _BUCKETS:
        if h < share:
            return split
        h -= share
    raise AssertionError("bucket shares must add up to 100")


@functools.cache
def _names_by_split() -> dict[str, frozenset[str]]:
    """Every name (lower case), by the split it falls in: one pass over the name space for all splits."""
    by_split: dict[str, set[str]] = {split: set() for split, _ in _BUCKETS}
    for parts in itertools.product(NAME_SYLLABLES, repeat=3):
        name = "".join(parts)
        by_split[split_of(name)].add(name)
    return {split: frozenset(names) for split, names in by_split.items()}


def names_in_split(split: str) -> frozenset[str]:
    """Every name (lower case) that falls in ``split``: what its items can draw from."""
    return _names_by_split()[split]


class NamesExhausted(ValueError):
    """A split has no fresh name left for the items asked of it."""


class _Names:
    """Fresh names of one split: each one drawn once, never a ``facts`` entity or an ``arith`` person. A draw
    after the split's last free name raises :class:`NamesExhausted` (rather than search for ever). The count
    of free names is exact while this object is the only one adding names of its split to ``taken``."""

    def __init__(self, split: str, rng: random.Random, taken: set[str]):
        self.split, self.rng, self.taken = split, rng, taken
        pool = names_in_split(split)
        self.left = len(pool) - sum(name in pool for name in taken)

    def draw(self) -> str:
        if self.left <= 0:
            raise NamesExhausted(f"passages: the {self.split} split has no fresh name left (it has "
                             f"{len(names_in_split(self.split)):,}); ask for fewer items or fewer facts per item")
        self.left -= 1
        while True:
            name = "".join(self.rng.choice(NAME_SYLLABLES) for _ in range(3)).capitalize()
            if name.lower() not in self.taken and split_of(name) == self.split:
                self.taken.add(name.lower())
                return name


def _taken(seed: int) -> set[str]:
    names = {name.lower() for name, _ in facts.ARITH_NAMES}
    names |= {e["name"].lower() for group in facts.entities(seed).values() for e in group}
    return names


def make_item(rng: random.Random, names: _Names, n_facts: int) -> Example:
    """One item with ``n_facts`` sentences (no id)."""
    if not 1 <= n_facts <= MAX_FACTS:
        raise ValueError(f"n_facts must be in 1..{MAX_FACTS}, not {n_facts}")
    kind = rng.choice(sorted(facts.KINDS))
    attribute = rng.choice(facts.KINDS[kind])
    asked = {"name": names.draw(), "kind": kind, "attribute": attribute, "value": rng.choice(VALUES)}
    rows = [asked]
    for _ in range(n_facts - 1):
        roll = rng.random()
        if roll < 0.15 and sum(r["name"] == asked["name"] for r in rows) == 1:  # its other attribute, once
            other = next(a for a in facts.KINDS[kind] if a != attribute)  # the asked entity's other attribute
            rows.append({**asked, "attribute": other, "value": rng.choice(VALUES)})
        elif roll < 0.6:  # same kind and attribute, another entity: only the name tells them apart
            rows.append({"name": names.draw(), "kind": kind, "attribute": attribute, "value": rng.choice(VALUES)})
        else:
            k = rng.choice(sorted(facts.KINDS))
            rows.append({"name": names.draw(), "kind": k, "attribute": rng.choice(facts.KINDS[k]),
                         "value": rng.choice(VALUES)})
    rng.shuffle(rows)
    context = " ".join(SENTENCE.format(**r) for r in rows)
    query = rng.choice(facts.PHRASINGS).format(attribute=attribute, kind=kind, name=asked["name"])
    value = asked["value"]
    return {
        "n_facts": n_facts,
        "entity": asked["name"],
        "entities": sorted({r["name"] for r in rows}),
        "context": context,
        "query": query,
        "question": f"{context} {query}",
        "answer": f"{asked['name']} has {value} {attribute}.\n#### {value}",
    }


def generate_split(split: str, seed: int = 0, n: int | None = None, n_facts: int | None = 4) -> list[Example]:
    """``n`` items of ``split`` (default: :data:`SPLIT_SIZES`, or :data:`N_PUBLIC` for ``public``), each with
    ``n_facts`` sentences (``None``: drawn per item from :data:`PUBLIC_FACTS`)."""
    if split not in dict(_BUCKETS):
        raise ValueError(f"unknown split {split!r}")
    n = n if n is not None else (N_PUBLIC if split == "public" else SPLIT_SIZES[split])
    rng = random.Random(f"passages-{split}-{seed}-{n_facts}")
    names = _Names(split, rng, _taken(seed))
    out = []
    for i in range(n):
        k = n_facts if n_facts is not None else rng.choice(PUBLIC_FACTS)
        out.append({"id": f"passages-{split}-{i:05d}", **make_item(rng, names, k)})
    return out


def generate_splits(seed: int = 0, n_facts: int | None = 4) -> dict[str, list[Example]]:
    """``train``, ``dev`` and ``test`` with ``n_facts`` sentences each (never an entity in common)."""
    return {split: generate_split(split, seed, n_facts=n_facts) for split in SPLIT_SIZES}
