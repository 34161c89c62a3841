"""Benchmark 1: training step time over the floor.

The floor is what a step cannot avoid: the translator's forward, the target's forward on the bridged
input and the backward pass to the soft tokens and the translator, on the same batch. The full step
adds everything else latentbridge does (source hidden states from the cache, prompts, layout,
objectives, clipping, the optimizer). Goal: full / floor <= 1.2.

    python benchmarks/step_floor.py [--recipe answer_softplus] [--repeats 30] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile

from common import interleaved, soft_token_floor, summary, write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.train.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="answer_softplus")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe(args.recipe, [f"cache.dir={tmp}/cache", "cache.source=true", *args.overrides])
        batch = recipe.train.batch_size
        recipe.train.max_train_examples = batch  # every step sees the same examples: the floor's batch
        exp = Experiment.build(recipe)
        runner = Runner(exp, f"{tmp}/run")
        step = iter(range(1, 10**9))
        runner.train_step(next(step))  # fills the source cache for the batch

        floor = soft_token_floor(exp, runner.train_examples)
        times = interleaved({"full step": lambda: runner.train_step(next(step)), "floor": floor}, args.repeats)
    full, low = summary(times["full step"]), summary(times["floor"])
    ratio = full["median_s"] / low["median_s"]
    write(
        "step_floor",
        {"recipe": recipe.name, "batch_size": batch, "full_step": full, "floor": low, "ratio": ratio},
        [("measure", "median seconds", "ratio to floor"),
         ("floor (translator + target forward + backward to soft tokens)", f"{low['median_s']:.4f}", "1.00"),
         ("full training step (source cache on)", f"{full['median_s']:.4f}", f"{ratio:.2f}")],
        notes="Goal: at most 1.2.",
    )


if __name__ == "__main__":
    main()
