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

import torch
from common import interleaved, summary, write
from latentbridge.plugins.objectives.nll import answer_nll

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

        examples = runner.train_examples
        bridge = exp.bridge
        prompts = [exp.task.prompt(e) for e in examples]
        h, mask = bridge.source_hidden(prompts, examples)
        with torch.no_grad():
            inputs = bridge.bridged_inputs(bridge.soft_tokens(prompts, hidden=(h, mask)), prompts, with_answer=True)
        base = inputs.inputs_embeds.detach()
        where = inputs.soft_mask
        labels = inputs.labels
        window = int((labels != -100).sum(1).max()) + 1
        kwargs = {"attention_mask": inputs.attention_mask, "position_ids": inputs.position_ids}

        def floor() -> None:
            soft = exp.translator(h.float(), mask)
            embeds = base.masked_scatter(where[..., None], soft.to(base.dtype))
            logits = bridge.target.model(inputs_embeds=embeds, **kwargs, logits_to_keep=window).logits
            answer_nll(logits, labels[:, -window:]).backward()
            exp.translator.zero_grad(set_to_none=True)

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
