"""How many ``arith`` test (and dev) questions a training question already holds, once names are masked.

    python benchmarks/arith_overlap.py [key=value ...]   (task settings, e.g. n_test=200 data_seed=0)

The splits are disjoint by question text, but the generator's templates draw a name (and its
pronoun) independently of the numbers, so a test problem can be a training problem about someone
else: the same numbers, items and answer. This counts, for the ``test`` and ``dev`` splits of the
task as a recipe builds it, the questions equal to a training question exactly and after
``latentbridge.zoo.arith.masked`` (every name and pronoun replaced by one placeholder), overall and
per template, and writes ``results/arith_overlap.md`` with the command that produced it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from latentbridge.api.task import DEV_SIZE
from latentbridge.registry.host import Registry
from latentbridge.zoo import specs
from latentbridge.zoo.arith import masked

RESULTS = Path(__file__).resolve().parent / "results"


def build_task(settings: dict, dev_n: int):
    registry = Registry.load(autoload=False)
    task = registry.get("task", "arith").cls(registry.config_for("task", "arith", settings))
    task.dev_size = dev_n
    return task


def overlap(task, split: str, train_questions: set[str], train_masked: dict[str, list]) -> dict:
    """Counts for ``split`` against the train split: exact and masked matches, overall and per template."""
    rows = task.examples(split)
    exact = [e for e in rows if e.question in train_questions]
    masked_hits = [e for e in rows if masked(e.question) in train_masked]
    same_answer = [e for e in masked_hits
                   if any(t.answer.splitlines()[-1] == e.answer.splitlines()[-1] for t in train_masked[masked(e.question)])]
    per_template = {}
    for label, n in sorted(Counter(e.label for e in rows).items()):
        per_template[label] = (sum(e.label == label for e in masked_hits), n)
    return {"n": len(rows), "exact": len(exact), "masked": len(masked_hits), "masked_same_answer": len(same_answer),
            "per_template": per_template, "examples": masked_hits[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dev-n", type=int, default=DEV_SIZE, help="dev split size (a recipe's eval.dev_n)")
    parser.add_argument("settings", nargs="*", help="task settings as key=value (YAML values)")
    args = parser.parse_args()
    settings = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"expected key=value, got {item!r}")
        settings[key] = yaml.safe_load(value)
    task = build_task(settings, args.dev_n)
    train = task.examples("train")
    train_questions = {e.question for e in train}
    train_masked: dict[str, list] = {}
    for e in train:
        train_masked.setdefault(masked(e.question), []).append(e)
    results = {split: overlap(task, split, train_questions, train_masked) for split in ("test", "dev")}

    command = "python " + " ".join([os.path.relpath(sys.argv[0], Path.cwd()), *sys.argv[1:]])
    c = task.config
    lines = [
        "# arith_overlap", "",
        f"Command: `{command}`  ",
        f"Task: `arith` (data_seed={c.data_seed}, n_train={c.n_train}, n_test={c.n_test}, dev_n={args.dev_n}); "
        f"{len(train):,} training questions, {len(train_masked):,} distinct once names and pronouns are masked "
        f"({time.strftime('%Y-%m-%d')})", "",
        "| split | questions | exact duplicates of a train question | equal to a train question once names are masked "
        "| ... and with the same final answer |",
        "|---|---|---|---|---|",
    ]
    for split, r in results.items():
        lines.append(f"| {split} | {r['n']} | {r['exact']} | {r['masked']} ({r['masked'] / r['n']:.1%}) "
                     f"| {r['masked_same_answer']} |")
    lines += ["", "Per template (masked matches / questions):", "",
              "| template | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for label in results["test"]["per_template"]:
        cells = []
        for r in results.values():
            hit, n = r["per_template"].get(label, (0, 0))
            cells.append(f"{hit} / {n}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "For example (test question -> a training question equal to it once masked):", ""]
    for e in results["test"]["examples"]:
        twin = train_masked[masked(e.question)][0]
        lines.append(f"- `{e.id}`: {e.question}  \n  `{twin.id}`: {twin.question}")
    lines += ["", "`masked` is `latentbridge.zoo.arith.masked`: every name and pronoun becomes `<who>`."]
    if c.data_seed == 0 and c.n_train == specs.N_TRAIN:
        lines[-1] += (" The built-in tiny pair was trained on exactly these training problems, so a masked match is a "
                      "problem the pair has seen about someone else (same numbers, same answer).")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arith_overlap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
