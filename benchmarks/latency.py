"""Benchmark 4: per-query latency on the tiny pair, every message kind against the text relay.

For each recipe (one per message kind: soft tokens, kv prefix, kv fusion, latent relay) the bridged
system's latency per query, one query at a time (batch 1) and in batches (``--batch``, per query = batch
time / batch size), beside the target alone and the text relay (source generation + target generation),
all greedy with the recipe's decoding settings; medians over the queries. The latent relay's time
includes the source writing its solution (its cache of solutions is emptied before each query).
Latency follows the length of what is generated, so the mean generated tokens are written beside.

    python benchmarks/latency.py [--recipes answer_softplus kv_prefix c2c_fusion latent_relay]
        [--queries 30] [--batch 16] [--repeats 1] [--weights NAME=RUN_DIR/best ...] [--name latency] [key=value ...]

``--second-pass``: the latent relay once more as it was before it kept the source's states while solving
(a second source pass over prompt + solution), in the same run.

``--variant LABEL RECIPE OVERRIDE...``: one more bridged system, a recipe with overrides of its own
(its weights: ``--weights LABEL=FOLDER``). ``--name``: the results file (``results/<name>.md`` and ``.json``), so that a measurement of other
recipes does not replace the message kinds' table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

from common import timed, write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.eval.harness import EvalSettings, Evaluator

RECIPES = ["answer_softplus", "kv_prefix", "c2c_fusion", "latent_relay"]


def evaluator(exp, recipe, tmp, start: int, size: int) -> Evaluator:
    settings = EvalSettings(n=start + size, batch_size=size, max_new_tokens=recipe.eval.max_new_tokens,
                            stop=list(recipe.eval.stop), systems=[])
    ev = Evaluator(exp.bridge, exp.task, settings, tmp, use_cache=False)
    ev.items, ev.prompts, ev.seeds = ev.items[start:], ev.prompts[start:], ev.seeds[start:]
    return ev


PARTS: dict[str, list[float]] = {}  # the parts of the last per_query call's latency, seconds per query


def per_query(exp, recipe, tmp, queries: int, size: int, run) -> tuple[float, float]:
    """Median seconds per query and mean generated characters, over ``queries`` in batches of ``size``;
    the parts (``Evaluator.timings``: each generation the system ran, and its messages) in ``PARTS``."""
    times, lengths = [], []
    PARTS.clear()
    for start in range(0, queries, size):
        ev = evaluator(exp, recipe, tmp, start, size)
        if exp.bridge.solutions is not None:
            exp.bridge.solutions.known.clear()  # the latent relay pays for the source's solution
        out: list[list[str]] = []
        times.append(timed(lambda ev=ev, out=out: out.append(run(ev))) / size)
        lengths += [len(exp.bridge.target.tokenizer(t)["input_ids"]) for t in out[0]]
        for part, seconds in ev.timings.items():
            PARTS.setdefault(part, []).append(seconds / size)
    return statistics.median(times), statistics.mean(lengths)


def parts() -> dict[str, float]:
    return {part: statistics.median(values) for part, values in PARTS.items()}


def measure(exp, recipe, tmp, args, run) -> dict[str, Any]:
    """One system at batch 1 and at ``args.batch``: median seconds per query, mean generated tokens, parts."""
    row: dict[str, Any] = {}
    for size, key in ((1, "batch 1"), (args.batch, f"batch {args.batch}")):
        row[key], row["tokens"] = per_query(exp, recipe, tmp, args.queries, size, run)
        row[f"parts, {key}"] = parts()
    return row


def combine(rounds: list[dict[str, dict[str, Any]]], against: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The rounds in one row per system: each time the median over the rounds, each ``ratio, <key>`` the
    median of the rounds' ratios to ``against`` (measured in the same round, so load that comes and goes
    weighs on both), the rounds' own ratios beside it (``ratios, <key>``)."""
    out: dict[str, dict[str, Any]] = {}
    for label, first in rounds[0].items():
        row = dict(rounds[-1][label])
        for key in keys:
            row[key] = statistics.median(r[label][key] for r in rounds)
            ratios = [r[label][key] / r[against][key] for r in rounds]
            row[f"ratio, {key}"], row[f"ratios, {key}"] = statistics.median(ratios), ratios
            row[f"parts, {key}"] = {part: statistics.median(r[label][f"parts, {key}"].get(part, 0.0) for r in rounds)
                                    for part in first.get(f"parts, {key}", {})}
        out[label] = row
    return out


def text_system(ev: Evaluator, system: str) -> list[str]:
    """A system that reads nothing trained (target, relay, two_stage, ...), generated afresh: what it needs
    of another (the relay's source solutions, two_stage's background) is generated inside the timing."""
    return ev.system(system).generate(ev)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds, each measuring every system once; ratios are the median of the rounds' ratios")
    parser.add_argument("--weights", nargs="*", default=[], help="NAME=FOLDER: a trained translator per recipe")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL RECIPE OVERRIDE",
                        help="a bridged system named LABEL: RECIPE with its own overrides (repeatable)")
    parser.add_argument("--name", default="latency", help="results file name (results/NAME.md, .json)")
    parser.add_argument("--systems", nargs="+", default=["target", "relay"],
                        help="text systems timed beside the bridged ones (target, relay, two_stage, skyline, ...)")
    parser.add_argument("--against", default="relay", help="the system every latency is divided by")
    parser.add_argument("--second-pass", action="store_true",
                        help="also time each latent relay with a second source pass over prompt + solution")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    weights = dict(w.split("=", 1) for w in args.weights)
    systems = [(name, name, []) for name in args.recipes]
    for variant in args.variant:
        if len(variant) < 2:
            parser.error("--variant needs a LABEL and a RECIPE")
        systems.append((variant[0], variant[1], variant[2:]))
    keys = ["batch 1", f"batch {args.batch}"]
    rounds: list[dict[str, dict[str, Any]]] = []  # each round: every system measured once
    built: dict[str, tuple[Any, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            rows: dict[str, dict[str, Any]] = {}
            rounds.append(rows)
            for i, (name, recipe_name, own) in enumerate(systems):
                if name not in built:
                    # train.max_train_examples=1: the latent relay solves only the dev and test prompts at build
                    recipe = load_recipe(recipe_name, ["train.max_train_examples=1", *args.overrides, *own])
                    built[name] = (Experiment.build(recipe, translator_dir=weights.get(name)), recipe)
                    built[name][0].translator.eval()
                exp, recipe = built[name]
                if i == 0:
                    labels = {"target": "target alone", "relay": "text relay"}
                    for system, label in ((s, labels.get(s, s)) for s in args.systems):
                        rows[label] = measure(exp, recipe, tmp, args, lambda ev, s=system: text_system(ev, s))
                ways = [(f"bridged: {name} ({exp.translator.emits})", True)]
                if args.second_pass and exp.bridge.solutions is not None:
                    ways.append((f"bridged: {name} ({exp.translator.emits}), second source pass", False))
                for label, reuse in ways:
                    exp.bridge.reuse_solving_states = reuse
                    rows[label] = measure(exp, recipe, tmp, args, lambda ev: ev.generate_bridged())
                if exp.bridge.solutions is not None:
                    rows[ways[0][0]]["rows: solving states read, second pass"] = [exp.bridge.solutions.reused,
                                                                                   exp.bridge.solutions.second_passes]
    against = {"target": "target alone", "relay": "text relay"}.get(args.against, args.against)
    rows = combine(rounds, against, keys)
    table = [("system", *(f"ms per query, {k}" for k in keys), *(f"vs {against}, {k}" for k in keys),
              "generated tokens", "parts at batch 1, ms per query")]
    for label, r in rows.items():
        split = ", ".join(f"{part} {sec * 1000:.1f}" for part, sec in r.get("parts, batch 1", {}).items())
        table.append((label, *(f"{r[k] * 1000:.1f}" for k in keys), *(f"{r[f'ratio, {k}']:.2f}" for k in keys),
                      f"{r['tokens']:.1f}", split or "-"))
    write(args.name, {"recipes": args.recipes, "variants": args.variant, "queries": args.queries, "batch": args.batch,
                      "repeats": args.repeats,
                      "systems_timed": args.systems, "against": args.against,
                      "weights": weights or "untrained", "systems": rows}, table,
          notes=f"Translators: {weights or 'untrained'}. Bridged: source forward (for the latent relay, the "
                "source's generation, whose states the translator reads, with a second source pass only for the "
                "rows whose cut solution re-tokenizes otherwise: counted in the JSON) + translator + "
                "target generation; text relay: source generation + target generation. Latency follows the length "
                f"of the generated answer (last column). {args.repeats} round(s), each measuring every system once: "
                f"ms are medians over the rounds, each ratio the median of the rounds' ratios to {against}.")


if __name__ == "__main__":
    main()
