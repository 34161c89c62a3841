"""Benchmark 2: training step time with the source hidden-state cache on vs off, after the first epoch.

    python benchmarks/cache_speedup.py [--recipe answer_softplus] [--repeats 20] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile

from common import interleaved, summary, write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.train.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="answer_softplus")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, default=4, help="training set size in batches (one epoch)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runners, counters = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, on in (("cache off", "false"), ("cache on", "true")):
            recipe = load_recipe(args.recipe, [f"cache.dir={tmp}/cache", f"cache.source={on}", *args.overrides])
            recipe.train.max_train_examples = recipe.train.batch_size * args.batches
            runner = Runner(Experiment.build(recipe), f"{tmp}/{name}")
            counters[name] = iter(range(1, 10**9))
            for _ in range(args.batches):  # the first epoch: the cache fills
                runner.train_step(next(counters[name]))
            runners[name] = runner
        times = interleaved({n: (lambda n=n: runners[n].train_step(next(counters[n]))) for n in runners}, args.repeats)
    off, on = summary(times["cache off"]), summary(times["cache on"])
    ratio = off["median_s"] / on["median_s"]
    write(
        "cache_speedup",
        {"recipe": args.recipe, "cache_off": off, "cache_on": on, "speedup": ratio},
        [("setting", "median step seconds (after epoch 1)", "speed-up"),
         ("source cache off", f"{off['median_s']:.4f}", "1.00"),
         ("source cache on", f"{on['median_s']:.4f}", f"{ratio:.2f}x")],
    )


if __name__ == "__main__":
    main()
