"""Benchmark 3: evaluation, batched vs one-by-one generation (items/s), and generation over its floor.

The floor is the models' own work for the same generation: the source's forward, the translator, the
target's prefill and one cached forward per new token, with no decoding, stop-string checks, layout
or bookkeeping.

    python benchmarks/eval_batching.py [--recipe answer_softplus] [--n 64] [--batch 32] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from common import summary, timed, write

from latentbridge.bridge.build import Experiment
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.layout import left_pad, positions_from_mask
from latentbridge.config.recipe import load_recipe
from latentbridge.eval.harness import EvalSettings, Evaluator


def floor_time(exp, hidden_list, inputs_list, steps_list) -> float:
    """Time the model calls alone: source forward, translator, prefill, `steps` cached forwards per batch."""
    model = exp.bridge.target.model
    start = time.perf_counter()
    with torch.no_grad():
        for (ids, mask, pos), inputs, steps in zip(hidden_list, inputs_list, steps_list, strict=True):
            h = exp.bridge.source.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                        output_hidden_states=True).hidden_states[exp.bridge.source_layer]
            exp.translator(h, mask)
            out = model(**inputs.model_kwargs(), use_cache=True, logits_to_keep=1)
            past, token = out.past_key_values, out.logits[:, -1].argmax(-1)
            mask, pos = inputs.attention_mask, inputs.position_ids[:, -1:] + 1
            for _ in range(steps):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                out = model(input_ids=token[:, None], attention_mask=mask, position_ids=pos, past_key_values=past)
                past, token, pos = out.past_key_values, out.logits[:, -1].argmax(-1), pos + 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="answer_softplus")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    exp = Experiment.build(recipe)
    target = exp.bridge.target
    settings = EvalSettings(n=args.n, batch_size=args.batch, max_new_tokens=recipe.eval.max_new_tokens,
                            stop=list(recipe.eval.stop), systems=["bridged"])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        batched = Evaluator(exp.bridge, exp.task, settings, tmp, use_cache=False)
        single = Evaluator(exp.bridge, exp.task, dataclasses.replace(settings, batch_size=1), tmp, use_cache=False)
        outputs = {}
        times = {"batched": [], "one by one": []}
        for _ in range(args.repeats):
            times["batched"].append(timed(lambda: outputs.__setitem__("batched", batched.generate_bridged())))
            times["one by one"].append(timed(lambda: outputs.__setitem__("single", single.generate_bridged())))
        assert outputs["batched"] == outputs["single"], "batched generation changed the outputs"
        # the floor for the batched run: same inputs, same number of steps per batch
        prompts, items = batched.prompts, batched.items
        inputs_list, steps_list, hidden_list, new_tokens = [], [], [], 0
        with torch.no_grad():
            for start in range(0, len(items), args.batch):
                c = slice(start, start + args.batch)
                soft = exp.bridge.soft_tokens(prompts[c], examples=items[c])
                inputs = exp.bridge.bridged_inputs(soft, prompts[c], with_answer=False)
                outs = greedy_generate(target.model, target.tokenizer, inputs, max_new_tokens=settings.max_new_tokens,
                                       eos_ids=target.eos_ids(), stop=settings.stop)
                inputs_list.append(inputs)
                ids, mask = left_pad(exp.bridge.source_rows(prompts[c]), exp.bridge.source.pad_id, target.device)
                hidden_list.append((ids, mask, positions_from_mask(mask)))
                steps_list.append(max(len(o.token_ids) for o in outs))
                new_tokens += sum(len(o.token_ids) for o in outs)
        floor = min(floor_time(exp, hidden_list, inputs_list, steps_list) for _ in range(args.repeats))
    b, s = summary(times["batched"]), summary(times["one by one"])
    rows = {
        "items": args.n, "batch_size": args.batch, "batched": b, "one_by_one": s,
        "batched_items_per_s": args.n / b["median_s"], "one_by_one_items_per_s": args.n / s["median_s"],
        "speedup": s["median_s"] / b["median_s"], "generated_tokens": new_tokens,
        "tokens_per_s": new_tokens / b["median_s"], "floor_s": floor, "over_floor": b["median_s"] / floor,
        "identical_outputs": True,
    }
    write(
        "eval_batching",
        rows,
        [("measure", "value"),
         ("one by one: items/s", f"{rows['one_by_one_items_per_s']:.1f}"),
         (f"batched ({args.batch}): items/s", f"{rows['batched_items_per_s']:.1f}"),
         ("batched / one by one", f"{rows['speedup']:.2f}x"),
         ("batched: generated tokens/s", f"{rows['tokens_per_s']:.0f}"),
         ("batched evaluation time / model-call floor", f"{rows['over_floor']:.2f}"),
         ("outputs identical", "yes")],
        notes="Bridged system (translator, injection, greedy decoding with a KV cache).",
    )


if __name__ == "__main__":
    main()
