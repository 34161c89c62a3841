"""Synthetic grade-school arithmetic word problems in GSM8K format (task ``arith``).

Every example is a dict::

    {"id": "arith-train-00042", "template": "eggs",
     "question": "Ava's hens lay 9 eggs per day. ...",
     "answer": "Ava has 9 - 3 = 6 eggs left.\\nShe makes 6 * 2 = 12 dollars.\\n#### 12"}

The answer follows GSM8K: worked solution lines, then a final ``#### <number>``
line (no ``<<...>>`` calculator annotations). Numbers are small and every answer
is a non-negative integer below 200. Generation is deterministic given the seed:
only a private ``random.Random(seed)`` is used, never the global RNG state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path

Example = dict[str, str]
_Template = Callable[[random.Random], tuple[str, list[str], int]]

NAMES: list[tuple[str, str]] = [
    ("Tom", "he"), ("Ava", "she"), ("Liam", "he"), ("Mia", "she"), ("Noah", "he"),
    ("Emma", "she"), ("Omar", "he"), ("Zoe", "she"), ("Ben", "he"), ("Lily", "she"),
    ("Sam", "he"), ("Nina", "she"), ("Jack", "he"), ("Rosa", "she"), ("Leo", "he"),
    ("Ivy", "she"), ("Max", "he"), ("Ella", "she"), ("Raj", "he"), ("Kate", "she"),
]
ITEMS: list[str] = [
    "apples", "pencils", "stickers", "cookies", "marbles", "books", "cards",
    "oranges", "balloons", "shells", "toys", "stamps", "candies", "flowers",
]
SHOP_ITEMS: list[str] = [
    "notebooks", "pens", "cupcakes", "tickets", "comics", "plants", "mugs",
    "sandwiches", "kites", "puzzles", "socks", "candles",
]
VEHICLES: list[tuple[str, str]] = [
    ("walks", "miles"), ("runs", "miles"), ("bikes", "miles"), ("drives", "miles"),
    ("swims", "laps"), ("rows", "kilometers"),
]


def _two_names(rng: random.Random) -> tuple[tuple[str, str], tuple[str, str]]:
    first, second = rng.sample(NAMES, 2)
    return first, second


def _shopping(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), _ = _two_names(rng)
    item = rng.choice(SHOP_ITEMS)
    n, price = rng.randint(2, 9), rng.randint(2, 12)
    cost = n * price
    if rng.random() < 0.5:
        q = f"{name} buys {n} {item} for ${price} each. How much does {pro} spend?"
        return q, [f"{name} spends {n} * {price} = {cost} dollars."], cost
    paid = cost + rng.randint(1, 40)
    paid = (paid + 9) // 10 * 10 if rng.random() < 0.5 else paid
    change = paid - cost
    q = (f"{name} buys {n} {item} for ${price} each and pays with ${paid}. "
         f"How much change does {pro} get?")
    lines = [f"The {item} cost {n} * {price} = {cost} dollars.",
             f"{name} gets {paid} - {cost} = {change} dollars back."]
    return q, lines, change


def _sharing(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), (friend, _) = _two_names(rng)
    item = rng.choice(ITEMS)
    if rng.random() < 0.5:
        have = rng.randint(10, 60)
        give = rng.randint(1, have - 1)
        left = have - give
        q = (f"{name} has {have} {item}. {pro.capitalize()} gives {give} {item} to "
             f"{friend}. How many {item} does {name} have left?")
        return q, [f"{name} has {have} - {give} = {left} {item} left."], left
    each, kids = rng.randint(2, 9), rng.randint(2, 6)
    total = each * kids
    q = (f"{name} shares {total} {item} equally among {kids} friends. "
         f"How many {item} does each friend get?")
    return q, [f"Each friend gets {total} / {kids} = {each} {item}."], each


def _eggs(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), _ = _two_names(rng)
    laid = rng.randint(6, 20)
    eaten = rng.randint(1, laid - 2)
    left = laid - eaten
    if rng.random() < 0.4:
        q = (f"{name}'s hens lay {laid} eggs per day. {pro.capitalize()} eats {eaten} "
             f"eggs every day. How many eggs are left each day?")
        return q, [f"{name} has {laid} - {eaten} = {left} eggs left."], left
    price = rng.randint(2, 5)
    money = left * price
    q = (f"{name}'s hens lay {laid} eggs per day. {pro.capitalize()} eats {eaten} eggs "
         f"every day and sells the rest for ${price} each. How much does {pro} make "
         f"every day?")
    lines = [f"{name} has {laid} - {eaten} = {left} eggs left.",
             f"{pro.capitalize()} makes {left} * {price} = {money} dollars."]
    return q, lines, money


def _ages(rng: random.Random) -> tuple[str, list[str], int]:
    (name, _), (other, _) = _two_names(rng)
    age, diff, later = rng.randint(3, 50), rng.randint(2, 30), rng.randint(2, 20)
    if rng.random() < 0.5:
        q = f"{name} is {age} years old. {other} is {diff} years older. How old is {other}?"
        return q, [f"{other} is {age} + {diff} = {age + diff} years old."], age + diff
    now = age + diff
    q = (f"{name} is {age} years old. {other} is {diff} years older than {name}. "
         f"How old will {other} be in {later} years?")
    lines = [f"{other} is {age} + {diff} = {now} years old now.",
             f"In {later} years {other} will be {now} + {later} = {now + later}."]
    return q, lines, now + later


def _distance(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), _ = _two_names(rng)
    verb, unit = rng.choice(VEHICLES)
    if rng.random() < 0.5:
        per, days = rng.randint(2, 12), rng.randint(2, 9)
        total = per * days
        q = (f"{name} {verb} {per} {unit} every day for {days} days. "
             f"How many {unit} does {pro} go in total?")
        return q, [f"{name} goes {per} * {days} = {total} {unit}."], total
    a, b, c = rng.randint(5, 60), rng.randint(5, 60), rng.randint(5, 60)
    q = (f"{name} {verb} {a} {unit} on Monday, {b} {unit} on Tuesday and {c} {unit} "
         f"on Wednesday. How many {unit} does {pro} go in all?")
    lines = [f"{name} goes {a} + {b} = {a + b} {unit} in two days.",
             f"In all {pro} goes {a + b} + {c} = {a + b + c} {unit}."]
    return q, lines, a + b + c


def _collection(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), _ = _two_names(rng)
    item = rng.choice(ITEMS)
    red, blue = rng.randint(3, 50), rng.randint(3, 50)
    total = red + blue
    if rng.random() < 0.4:
        q = (f"{name} has {red} red {item} and {blue} blue {item}. "
             f"How many {item} does {pro} have?")
        return q, [f"{name} has {red} + {blue} = {total} {item}."], total
    lost = rng.randint(1, total - 1)
    q = (f"{name} has {red} red {item} and {blue} blue {item}. {pro.capitalize()} "
         f"loses {lost} {item}. How many {item} does {pro} have now?")
    lines = [f"{name} has {red} + {blue} = {total} {item}.",
             f"Now {pro} has {total} - {lost} = {total - lost} {item}."]
    return q, lines, total - lost


def _savings(rng: random.Random) -> tuple[str, list[str], int]:
    (name, pro), _ = _two_names(rng)
    per, weeks = rng.randint(2, 15), rng.randint(2, 9)
    saved = per * weeks
    spent = rng.randint(1, saved - 1)
    q = (f"{name} saves ${per} every week for {weeks} weeks. Then {pro} spends "
         f"${spent} on a game. How much money does {pro} have left?")
    lines = [f"{name} saves {per} * {weeks} = {saved} dollars.",
             f"{pro.capitalize()} has {saved} - {spent} = {saved - spent} dollars left."]
    return q, lines, saved - spent


TEMPLATES: dict[str, _Template] = {
    "shopping": _shopping,
    "sharing": _sharing,
    "eggs": _eggs,
    "ages": _ages,
    "distance": _distance,
    "collection": _collection,
    "savings": _savings,
}


def make_example(rng: random.Random) -> Example:
    """Draw one problem (without ``id``) from a uniformly chosen template."""
    name = rng.choice(sorted(TEMPLATES))
    question, lines, value = TEMPLATES[name](rng)
    assert 0 <= value < 200, (name, question, value)
    answer = "\n".join(lines + [f"#### {value}"])
    return {"template": name, "question": question, "answer": answer}


def generate_splits(
    seed: int, n_train: int, n_test: int, n_dev: int = 0, dev_after: int = 0, avoid: frozenset[str] = frozenset()
) -> tuple[list[Example], ...]:
    """Return ``(train, test)`` lists of unique problems, disjoint by question text, or
    ``(train, test, dev)`` when ``n_dev`` is set.

    The test split is drawn first so its content does not depend on ``n_train``; then train; dev is drawn
    after ``max(n_train, dev_after)`` train problems, skipping the questions in ``avoid`` (a model's
    training problems), so it never holds a problem the first ``dev_after`` train problems hold.
    """
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(split: str, n: int, keep: bool = True, skip: frozenset[str] = frozenset()) -> list[Example]:
        out: list[Example] = []
        while len(out) < n:
            ex = make_example(rng)
            if ex["question"] in seen or ex["question"] in skip:
                continue
            seen.add(ex["question"])
            out.append({"id": f"arith-{split}-{len(out):05d}", **ex})
        return out if keep else []

    test = draw("test", n_test)
    train = draw("train", n_train)
    if not n_dev:
        return train, test
    draw("unused", max(0, dev_after - n_train), keep=False)
    return train, test, draw("dev", n_dev, skip=avoid)


def masked(question: str) -> str:
    """The question with every name and pronoun replaced by a placeholder: problems that differ only in
    who they are about become equal."""
    words = {w.lower() for w in {name for name, _ in NAMES} | {p for _, p in NAMES} | {"his", "her", "him"}}

    def who(word: str) -> bool:
        bare = word.strip(".,?!").lower()
        return bare in words or (bare.endswith("'s") and bare[:-2] in words)

    return " ".join("<who>" if who(w) else w for w in question.split())


def write_jsonl(path: str | Path, examples: Iterable[Example]) -> None:
    """Write ``examples`` to ``path`` as one JSON object per line (UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[Example]:
    """Read a JSONL file written by :func:`write_jsonl`."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
