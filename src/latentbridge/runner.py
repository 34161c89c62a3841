"""Training a translator: the loop, periodic evaluation, early stopping and the run folder."""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import LatentBridgeError
from .eval.harness import EvalSettings, Evaluator
from .experiment import Experiment
from .objective import scheduled_weights
from .recipe import Recipe
from .rundir import append_jsonl, git_commit, new_run_dir, write_json_atomic
from .schedule import DataOrder, lr_factor
from .steps import StepBuilder
from .translator import save_translator


@dataclass
class RunState:
    """Everything that changes during training (what a checkpoint must hold)."""

    step: int = 0
    best_accuracy: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    stopped_early: bool = False


class Runner:
    """Trains the experiment's translator and evaluates it; writes everything into ``run_dir``."""

    def __init__(self, experiment: Experiment, run_dir: Path, ui: Any = None):
        self.exp = experiment
        self.recipe: Recipe = experiment.recipe
        self.run_dir = Path(run_dir)
        self.ui = ui
        r = self.recipe
        self.train_examples = experiment.task.examples("train")
        if r.train.max_train_examples:
            self.train_examples = self.train_examples[: r.train.max_train_examples]
        self.order = DataOrder(len(self.train_examples), r.seed)
        self.generator = torch.Generator().manual_seed(r.seed + 2)  # training-time sampling (noise, curriculum)
        self.steps = StepBuilder(experiment, self.generator)
        self.params = experiment.trainable_parameters()
        t = r.train
        if not self.params and t.steps > 0:
            raise LatentBridgeError(
                f"translator '{r.translator.name}' and the objectives have no trainable parameters; "
                "use train.steps=0 to evaluate it as it is"
            )
        dummy = [torch.nn.Parameter(torch.zeros(()))] if not self.params else self.params
        self.optimizer = torch.optim.AdamW(dummy, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total=t.steps, warmup=t.warmup_steps, schedule=t.schedule, min_ratio=t.min_lr_ratio),
        )
        self.state = RunState()
        self.evaluator = Evaluator(
            experiment.bridge,
            experiment.task,
            EvalSettings(n=r.eval.n, batch_size=r.eval.batch_size, max_new_tokens=r.eval.max_new_tokens,
                         stop=list(r.eval.stop), systems=list(r.eval.systems)),
            self.run_dir,
            progress=ui.eval_progress if ui else None,
        )

    # -- the run folder ------------------------------------------------------------------------------

    def write_header(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.yaml").write_text(self.recipe.to_yaml())
        b = self.exp.bridge
        write_json_atomic(self.run_dir / "run.json", {
            "recipe": self.recipe.name,
            "latentbridge": __version__,
            "git_commit": git_commit(),
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "plugins": self.exp.plugin_versions(),
            "models": {"source": b.source.describe(), "target": b.target.describe()},
            "translator": {**b.translator.describe(), "parameters": b.translator.num_parameters()},
            "torch": torch.__version__,
            "status": "running",
        })

    def set_status(self, status: str, **extra: Any) -> None:
        path = self.run_dir / "run.json"
        import json

        data = json.loads(path.read_text())
        data.update(status=status, **extra)
        write_json_atomic(path, data)

    # -- one optimizer step --------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, Any]:
        t = self.recipe.train
        self.exp.translator.train()
        self.exp.objectives.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = defaultdict(float)
        weights = scheduled_weights({name: obj.config for name, obj in self.exp.objectives.items()}, step)
        total = 0.0
        finite = True
        for _ in range(t.grad_accum):
            examples = [self.train_examples[i] for i in self.order.take(t.batch_size)]
            ctx = self.steps.context(step, examples)
            loss, values = weighted_loss(self.exp.objectives, ctx, weights)
            for name, value in values.items():
                terms[name] += value / t.grad_accum
            finite = finite and math.isfinite(loss.item())
            if finite:
                (loss / t.grad_accum).backward()
            total += loss.item() / t.grad_accum
        if finite:
            max_norm = t.max_grad_norm if t.max_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            self.optimizer.step()
        else:
            grad_norm = math.nan
            self.state.skipped_steps += 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {
            "step": step,
            "loss": total,
            **{f"loss/{name}": (terms[name] if weights[name] else None) for name in weights},
            **{f"weight/{name}": w for name, w in weights.items()},
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped_steps": self.state.skipped_steps,
        }

    # -- evaluation and the best copy ----------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, Any]:
        result = self.evaluator.evaluate(step)
        self.state.evaluations.append(result)
        bridged = result["systems"]["bridged"]["accuracy"]
        if self.state.best_accuracy is None or bridged > self.state.best_accuracy:
            self.state.best_accuracy, self.state.best_step = bridged, step
            self.state.evals_since_best = 0
            save_translator(self.exp.translator, self.run_dir / "best", extra={"step": step, "bridged_accuracy": bridged})
            self.save_objective_params(self.run_dir / "best")
        else:
            self.state.evals_since_best += 1
        self.write_summary()
        if self.ui:
            self.ui.evaluation(result)
        return result

    def write_summary(self) -> None:
        write_json_atomic(self.run_dir / "summary.json", {
            "recipe": self.recipe.name,
            "evaluations": self.state.evaluations,
            "best": {"step": self.state.best_step, "bridged_accuracy": self.state.best_accuracy},
            "final_step": self.state.evaluations[-1]["step"] if self.state.evaluations else None,
            "stopped_early": self.state.stopped_early,
        })

    def save_objective_params(self, folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.exp.objectives.state_dict().items()}
        if state:
            from safetensors.torch import save_file

            save_file(state, str(folder / "objectives.safetensors"))

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> RunState:
        r = self.recipe
        self.write_header()
        total = r.train.steps
        pending: list[dict[str, Any]] = []
        window_start, window_examples = time.perf_counter(), 0
        if self.ui:
            self.ui.start_training(total)
        for step in range(self.state.step + 1, total + 1):
            record = self.train_step(step)
            self.state.step = step
            window_examples += r.train.batch_size * r.train.grad_accum
            pending.append(record)
            if step % r.train.log_every == 0 or step == total:
                line = average_records(pending)
                append_jsonl(self.run_dir / "metrics.jsonl", line)
                elapsed = time.perf_counter() - window_start
                append_jsonl(self.run_dir / "speed.jsonl", {
                    "step": step, "seconds": elapsed, "examples_per_s": window_examples / max(elapsed, 1e-9),
                })
                pending, window_start, window_examples = [], time.perf_counter(), 0
            if self.ui:
                self.ui.training_step(step, record)
            if step % r.eval.every == 0 or step == total:
                self.evaluate(step)
                if r.eval.patience is not None and self.state.evals_since_best >= r.eval.patience and step < total:
                    self.state.stopped_early = True
                    self.write_summary()
                    break
        if not self.state.evaluations or self.state.evaluations[-1]["step"] != self.state.step:
            self.evaluate(self.state.step)
        save_translator(self.exp.translator, self.run_dir, extra={"step": self.state.step})
        self.save_objective_params(self.run_dir)
        self.set_status("finished", final_step=self.state.step, best_step=self.state.best_step)
        return self.state


def weighted_loss(objectives: torch.nn.ModuleDict, ctx: Any, weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """``sum(weight * term)`` over the objectives whose weight is not 0, and each term's unweighted value.

    This is the one place a weight is applied to a term."""
    loss = ctx.soft.new_zeros((), dtype=torch.float32)
    values: dict[str, float] = {}
    for name, objective in objectives.items():
        if weights[name] == 0.0:
            continue
        term = objective(ctx)
        loss = loss + weights[name] * term
        values[name] = term.item()
    return loss, values


def average_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics line for the steps since the last one: the last step's lr and weights, the mean of
    the loss terms and grad norms over the steps (a term that was off is null)."""
    last = records[-1]
    line: dict[str, Any] = {"step": last["step"], "steps_averaged": len(records)}
    for key, value in last.items():
        if key in ("step",):
            continue
        if key.startswith("loss") or key == "grad_norm":
            values = [r[key] for r in records if r.get(key) is not None]
            line[key] = sum(values) / len(values) if values else None
        else:
            line[key] = value
    return line


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.run_dir) if recipe.run_dir else new_run_dir(recipe.name)
