"""Benchmark 4: per-query latency on the tiny pair: bridged (soft_only) vs text relay vs target alone.

One query at a time (batch 1), greedy, the recipe's decoding settings; median over the queries.

    python benchmarks/latency.py [--recipe answer_softonly] [--queries 30] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from common import timed, write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.eval.harness import EvalSettings, Evaluator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="answer_softonly")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--weights", default=None, help="a trained translator folder (e.g. RUN_DIR/best); default: untrained")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    exp = Experiment.build(recipe, translator_dir=args.weights)
    times = {"target alone": [], "bridged (soft_only)": [], "text relay": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.queries):
            settings = EvalSettings(n=i + 1, batch_size=1, max_new_tokens=recipe.eval.max_new_tokens,
                                    stop=list(recipe.eval.stop), systems=[])
            ev = Evaluator(exp.bridge, exp.task, settings, tmp, use_cache=False)
            ev.items, ev.prompts = ev.items[i : i + 1], ev.prompts[i : i + 1]
            b = exp.bridge
            times["target alone"].append(timed(lambda ev=ev, b=b: ev._text_system(
                b.target, [b.target_encoder.prompt_ids(p) for p in ev.prompts], "target")))
            times["bridged (soft_only)"].append(timed(ev.generate_bridged))

            def relay(ev=ev, b=b):
                ev.settings.systems = ["relay"]
                ev._baselines = None
                ev.baselines()

            times["text relay"].append(timed(relay))
    base = statistics.median(times["target alone"])
    table = [("system", "median ms per query", "vs target alone")]
    result = {}
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {"median_ms": median * 1000, "ratio": median / base}
        table.append((name, f"{median * 1000:.1f}", f"{median / base:.2f}"))
    weights = args.weights or "untrained"
    write("latency", {"recipe": recipe.name, "weights": weights, "queries": args.queries, "systems": result}, table,
          notes=f"Translator: {weights}. Bridged: source forward + translator + target generation. Relay: source "
                "generation + target generation. Latency follows the length of the generated answer.")


if __name__ == "__main__":
    main()
