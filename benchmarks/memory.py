"""Benchmark 5: peak memory of a training step vs the sum of frozen weights, translator and optimizer state.

On CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated just before the steps (the static
memory: gradients are set to None first, so they count in the steps' growth). On CPU: the process's peak
resident set during the steps (``VmHWM``, reset before them), above its resident set just before.

    python benchmarks/memory.py [--recipe answer_softplus] [--steps 5] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.train.estimate import PeakMemory, tensor_bytes
from latentbridge.train.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="answer_softplus")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe(args.recipe, args.overrides)
        exp = Experiment.build(recipe)
        runner = Runner(exp, f"{tmp}/run")
        runner.train_step(1)  # creates the optimizer state
        frozen = tensor_bytes(exp.bridge.source.model.parameters()) + tensor_bytes(exp.bridge.target.model.parameters())
        translator = tensor_bytes(exp.trainable_parameters())
        optimizer = tensor_bytes(t for s in runner.optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        static = frozen + translator + optimizer
        cuda = torch.cuda.is_available()
        runner.optimizer.zero_grad(set_to_none=True)  # the gradients are the steps' own: inside the window
        with PeakMemory(exp.bridge.target.device) as measured:
            for step in range(2, 2 + args.steps):
                runner.train_step(step)
        extra = measured.extra
        peak = static + extra
    ratio = peak / static
    mib = 2**20
    write(
        "memory",
        {"recipe": recipe.name, "device": "cuda" if cuda else "cpu", "frozen_weights_bytes": frozen,
         "translator_bytes": translator, "optimizer_state_bytes": optimizer, "static_bytes": static,
         "step_extra_bytes": extra, "peak_bytes": peak, "ratio": ratio},
        [("part", "MiB"),
         ("frozen weights (source + target)", f"{frozen / mib:.2f}"),
         ("translator (+ objective) parameters", f"{translator / mib:.2f}"),
         ("optimizer state (AdamW)", f"{optimizer / mib:.2f}"),
         ("sum", f"{static / mib:.2f}"),
         ("peak during a training step", f"{peak / mib:.2f}"),
         ("peak / sum", f"{ratio:.2f}")],
        notes="CPU: peak = sum + growth of the resident set during the steps (activations, gradients, "
              "allocator slack). No parameter gradients or optimizer state exist for the frozen models.",
    )


if __name__ == "__main__":
    main()
