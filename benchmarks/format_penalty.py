"""format_penalty: its share of the gradient at initialisation, and the invalid rate with and without it.

    python benchmarks/format_penalty.py grad [--batches 4]          # gradient share at initialisation

`grad`: for the `format_scaled` recipe (prompt_softonly_phase2_swap plus format_penalty, weight 0.5 x
prompt alignment's) at initialisation, the norm of the weighted format term's gradient on the translator
against that of the other terms together, averaged over a few training batches, and how many rows of each
batch ended free-running without a `#### N` line (only those are scored).
The invalid rate with and without the term, paired by seed, is a table of `outcome_tables.py`
(results/format_penalty.md, from the kept runs of the `softonly` and `format_penalty` sweeps).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import write

from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import load_recipe
from latentbridge.train.loss import scheduled_weights
from latentbridge.train.steps import StepBuilder

SWEEPS = Path("runs/sweeps")


def grad_share(batches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe("format_scaled", [f"cache.dir={tmp}/cache", "eval.dev_n=8"])
        exp = Experiment.build(recipe)
        builder = StepBuilder(exp, torch.Generator().manual_seed(0))
        params = [p for p in exp.translator.parameters() if p.requires_grad]
        step = recipe.objectives["format_penalty"].start_step + 101  # past the warm-ups
        weights = scheduled_weights({n: o.config for n, o in exp.objectives.items()}, step)
        rows, shares = [], []
        size = recipe.train.batch_size
        train = exp.task.examples("train")
        for b in range(batches):
            ctx = builder.context(step, train[b * size : (b + 1) * size])
            norms = {}
            for name, objective in exp.objectives.items():
                loss = weights[name] * objective(ctx)
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                norms[name] = float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))
            others = sum(v for k, v in norms.items() if k != "format_penalty")
            shares.append(norms["format_penalty"] / others)
            rows.append(norms)
    mean = sum(shares) / len(shares)
    table = [("batch", *rows[0].keys(), "format / the others")]
    table += [(str(i), *(f"{v:.4g}" for v in r.values()), f"{s:.3f}") for i, (r, s) in enumerate(zip(rows, shares, strict=True))]
    write("format_penalty_grad", {"recipe": "format_scaled", "step_weights": weights, "rows": rows,
                                  "shares": shares, "mean_share": mean}, table,
          notes=f"Gradient norms on the translator of each weighted term at initialisation (weights at step {step}); "
                f"the format term's mean share against the sum of the others' norms: {mean:.3f} (the first design, "
                "teacher-forced, carried 0.0006).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["grad"])
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    grad_share(args.batches)


if __name__ == "__main__":
    main()
