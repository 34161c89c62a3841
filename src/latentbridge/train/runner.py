"""Training a translator: the loop, evaluation, early stopping, checkpoints, resume and preemption.

Exit paths: the run finishes (status ``finished``); it is preempted by SIGTERM, SIGINT or SIGUSR1
(:class:`Preempted`: the current step completes, a checkpoint is written, status ``preempted``);
or it diverges (:class:`Diverged`: ``train.max_nonfinite`` non-finite losses in a row; nothing more
is written, the last good checkpoint stays, status ``stopped``). Everything the run does is told
to its consumers as events (:mod:`latentbridge.api.events`): the ``metrics.jsonl`` writer, the
console and the recipe's experiment loggers.
"""

from __future__ import annotations

import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from latentbridge.api import events
from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import Recipe
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.harness import EvalSettings, Evaluator, Interrupted
from latentbridge.io import card, checkpoint
from latentbridge.io.rundir import new_run_dir
from latentbridge.io.weights import OBJECTIVES_FILE, WEIGHTS_FILE
from latentbridge.runtime.distributed import (
    any_true,
    average_gradients,
    barrier,
    mean_values,
    rank,
    world_size,
)
from latentbridge.runtime.precision import autocast
from latentbridge.train.data_order import DataOrder
from latentbridge.train.events import EventBus
from latentbridge.train.folder import RunFolder
from latentbridge.train.loss import scheduled_weights, weighted_loss
from latentbridge.train.metrics import average_records
from latentbridge.train.schedule import lr_factor
from latentbridge.train.state import (
    Diverged,
    Preempted,
    RunState,
    install_signal_handlers,
    restore_signal_handlers,
)
from latentbridge.train.steps import StepBuilder


class Runner:
    """Trains the experiment's translator and evaluates it; writes everything into ``run_dir``.

    ``consumers`` receive every run event besides the recipe's loggers (the CLI passes its console
    display); their ``on_run_event(event)`` is called in order."""

    def __init__(self, experiment: Experiment, run_dir: Path, consumers: Iterable[Any] = ()):
        self.exp = experiment
        self.recipe: Recipe = experiment.recipe
        self.run_dir = Path(run_dir)
        r = self.recipe
        self.train_examples = experiment.task.examples("train")
        if r.train.max_train_examples:
            self.train_examples = self.train_examples[: r.train.max_train_examples]
        self.order = DataOrder(len(self.train_examples), r.seed)
        self.generator = torch.Generator().manual_seed(r.seed + 2)  # training-time sampling (noise, curriculum)
        self.steps = StepBuilder(experiment, self.generator)
        self.params = experiment.trainable_parameters()
        t = r.train
        self.world, self.rank = world_size(), rank()
        self.main = self.rank == 0
        if t.batch_size % self.world:
            raise LatentBridgeError(
                f"train.batch_size ({t.batch_size}, the global batch) must be divisible by the number of "
                f"processes ({self.world})"
            )
        if not self.params and t.steps > 0:
            raise LatentBridgeError(
                f"translator '{r.translator.name}' and the objectives have no trainable parameters; "
                "use train.steps=0 to evaluate it as it is"
            )
        groups = experiment.param_groups() if self.params else [{"params": [torch.nn.Parameter(torch.zeros(()))]}]
        self.optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total=t.steps, warmup=t.warmup_steps, schedule=t.schedule, min_ratio=t.min_lr_ratio),
        )
        self.state = RunState()
        self.card = card.bridge_card(experiment)
        self.folder = RunFolder(self.run_dir, experiment, self.card, self.main)
        self.signal_name: str | None = None
        # a stop signal noted before this runner took the signals over (train_recipe: while the run was set up)
        self.inherited_signal: Callable[[], str | None] | None = None
        loggers = experiment.build_loggers(self.run_dir) if self.main else []
        self.events = EventBus([*loggers, *consumers], global_hook=experiment.registry.event_hook())
        self.evaluators = {split: Evaluator(
            experiment.bridge, experiment.task, EvalSettings.from_config(r.eval, split), self.run_dir, split=split,
            seed=r.seed, progress=self._eval_progress, should_stop=lambda: any_true(self.signal_name is not None),
            autocast=r.models.autocast,
        ) for split in ("dev", "test")}

    def autocast(self):
        target = self.exp.bridge.target
        return autocast(target.device, target.dtype, self.recipe.models.autocast)

    def log(self, message: str) -> None:
        self.events.emit(events.Message(message))

    def _eval_progress(self, what: str, done: int, total: int) -> None:
        self.events.emit(events.EvaluationProgress(self.state.step, what, done, total))

    def _started(self, resumed_from: int | None) -> None:
        self.events.emit(events.RunStarted(
            run_dir=self.run_dir, recipe=self.recipe.to_dict(), info=self.folder.read_info() if self.main else {},
            total_steps=self.recipe.train.steps, resumed_from=resumed_from,
        ))

    def _set_status(self, status: str, **details: Any) -> None:
        self.folder.set_status(status, self.state, **details)
        if status != "running":
            final = self.state.test.get("final") or (self.state.evaluations[-1] if self.state.evaluations else None)
            self.events.emit(events.RunEnded(status=status, step=self.state.step, best_step=self.state.best_step,
                                             error=details.get("error"), final=final))

    # -- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        self.state.last_checkpoint = self.state.step
        if self.main:
            state = asdict(self.state)
            state["data"] = self.order.state()
            path = checkpoint.save_checkpoint(
                self.run_dir, self.state.step,
                translator=self.exp.translator, objectives=self.exp.objectives, optimizer=self.optimizer,
                scheduler=self.scheduler, generator=self.generator, state=state, card=self.card,
                keep=self.recipe.checkpoint.keep,
            )
            self.events.emit(events.CheckpointWritten(self.state.step, path))
        barrier()

    def restore(self) -> None:
        """Continue from the newest complete checkpoint: weights, optimizer, RNG, data position, files."""
        if not (self.run_dir / "run.json").is_file():
            raise LatentBridgeError(f"{self.run_dir} holds no run to resume (no run.json)")
        ckpt = checkpoint.load_latest(self.run_dir, warn=self.log)
        saved_card = card.read_card(ckpt.folder)
        if saved_card and saved_card.get("recipe_hash") != self.card["recipe_hash"]:
            raise LatentBridgeError(
                f"{self.run_dir} holds a run of another recipe (hash {saved_card.get('recipe_hash')}, this one "
                f"{self.card['recipe_hash']}); resume with the run's own recipe: {self.run_dir / 'recipe.yaml'}"
            )
        if saved_card:
            card.check_card(saved_card, self.card, f"checkpoint {ckpt.folder}")
        self.exp.translator.load_state_dict(ckpt.tensors(WEIGHTS_FILE))
        objective_state = ckpt.tensors(OBJECTIVES_FILE)
        if objective_state:
            self.exp.objectives.load_state_dict(objective_state)
        opt = ckpt.optimizer_state()
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        rng = ckpt.tensors("rng.safetensors")
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in rng])
        checkpoint.restore_python_random(ckpt.state["python_random"])
        data = ckpt.state["data"]
        self.order = DataOrder(len(self.train_examples), self.recipe.seed, data["epoch"], data["offset"])
        known = {f.name for f in RunState.__dataclass_fields__.values()}
        self.state = RunState(**{k: v for k, v in ckpt.state.items() if k in known})
        barrier()  # every process has read the checkpoint before the main one rewinds the folder
        self.folder.rewind(ckpt, self.state)
        barrier()
        self._started(resumed_from=ckpt.step)
        self.log(f"resuming from checkpoint at step {ckpt.step}")

    # -- one optimizer step --------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, Any]:
        t = self.recipe.train
        self.exp.translator.train()
        self.exp.translator.set_progress(step, t.steps)
        self.exp.objectives.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = defaultdict(float)
        weights = scheduled_weights({name: obj.config for name, obj in self.exp.objectives.items()}, step)
        total = 0.0
        finite = True
        per_process = t.batch_size // self.world
        part = slice(self.rank * per_process, (self.rank + 1) * per_process)
        for _ in range(t.grad_accum):
            # the global batch is drawn on every process alike; each takes its own slice of it
            examples = [self.train_examples[i] for i in self.order.take(t.batch_size)]
            with self.autocast():
                ctx = self.steps.context(step, examples, part)
                loss, values, weighted = weighted_loss(self.exp.objectives, ctx, weights)
            for name, value in values.items():
                terms[name] += value / t.grad_accum
            finite = finite and math.isfinite(loss.item())
            if finite:
                (loss / t.grad_accum).backward()
            total += weighted / t.grad_accum
        finite = not any_true(not finite)
        terms = mean_values(dict(terms))
        total = mean_values({"loss": total})["loss"]
        grad_norm = math.nan
        if finite and self.params:
            average_gradients(self.params)
            max_norm = t.max_grad_norm if t.max_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.state.nonfinite_in_a_row = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.state.skipped_steps += 1
            self.state.nonfinite_in_a_row += 1
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
        """A periodic evaluation, on dev: the best copy and early stopping select on it."""
        try:
            result = self.evaluators["dev"].evaluate(step)
        except Interrupted:
            self.state.pending_eval = True
            raise
        self.state.pending_eval = False
        self.state.evaluations.append(result)
        bridged = result["systems"]["bridged"]["accuracy"]
        if self.state.best_accuracy is None or bridged > self.state.best_accuracy:
            self.state.best_accuracy, self.state.best_step = bridged, step
            self.state.evals_since_best = 0
            self.folder.save_weights(self.run_dir / "best", step=step, bridged_accuracy=bridged)
        else:
            self.state.evals_since_best += 1
        self.folder.write_summary(self.state)
        self.events.emit(events.EvaluationEnded(step=step, split="dev", summary=result))
        return result

    def test_evaluations(self) -> None:
        """At the end: the test split for the final weights and for the dev-chosen best (once each; a run
        preempted here does the missing ones on resume). The final weights are live again afterwards."""
        state, test = self.state, self.evaluators["test"]
        if "final" not in state.test:
            state.test["final"] = test.evaluate(state.step)
            self.folder.write_summary(state)
            self.events.emit(events.EvaluationEnded(step=state.step, split="test", summary=state.test["final"]))
        if "best" in state.test or state.best_step is None:
            return
        if state.best_step == state.step:
            state.test["best"] = {**state.test["final"], "weights": "best"}
        else:
            final_weights = [{k: v.clone() for k, v in m.state_dict().items()} for m in (self.exp.translator, self.exp.objectives)]
            try:
                self.exp.load_translator(self.run_dir / "best")
                state.test["best"] = test.evaluate(state.best_step, label="best")
            finally:
                self.exp.translator.load_state_dict(final_weights[0])
                self.exp.objectives.load_state_dict(final_weights[1])
        self.folder.write_summary(state)
        self.events.emit(events.EvaluationEnded(step=state.best_step, split="test", summary=state.test["best"]))

    # -- signals -------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name

    def _install_handlers(self) -> dict[int, Any]:
        previous = install_signal_handlers(self._on_signal)
        inherited = self.inherited_signal() if self.inherited_signal is not None else None
        if inherited is not None and self.signal_name is None:  # it came while the run was being set up
            self.signal_name = inherited
        return previous

    def _check_signal(self) -> None:
        if any_true(self.signal_name is not None):  # all processes stop at the same step
            name = self.signal_name or "SIGTERM"
            self.save_checkpoint()
            self._set_status("preempted", signal=name, step=self.state.step)
            raise Preempted(name, self.state.step)

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> RunState:
        if resume:
            self.restore()
        else:
            self.folder.claim(self.folder.header(), self.state)
            self._started(resumed_from=None)
            self.save_checkpoint()  # step 0: a job killed before its first checkpoint still resumes
        previous = self._install_handlers()
        try:
            self._loop()
            self.folder.save_weights(self.run_dir, step=self.state.step)
            self.test_evaluations()
        except Interrupted:
            self._check_signal()
            raise
        except LatentBridgeError as exc:  # e.g. a plugin that raised: say so, keep every checkpoint
            self._set_status("failed", error=str(exc).splitlines()[0], step=self.state.step)
            raise
        finally:
            restore_signal_handlers(previous)
        self.save_checkpoint()
        self._set_status("finished", final_step=self.state.step, best_step=self.state.best_step)
        return self.state

    def _loop(self) -> None:
        r = self.recipe
        total = r.train.steps
        window_start, window_examples = time.perf_counter(), 0
        if self.state.pending_eval:  # preempted at an evaluation step before it finished: do it now
            if self._evaluate_at(self.state.step):
                return  # early stopping: run() writes the final checkpoint
            self.save_checkpoint()
        for step in range(self.state.step + 1, total + 1):
            record = self.train_step(step)
            self.state.step = step
            if self.state.nonfinite_in_a_row >= r.train.max_nonfinite:
                self._set_status("stopped", reason=f"{self.state.nonfinite_in_a_row} non-finite losses in a row",
                                 step=step, last_checkpoint=self.state.last_checkpoint)
                raise Diverged(step, self.state.nonfinite_in_a_row, self.state.last_checkpoint)
            window_examples += r.train.batch_size * r.train.grad_accum
            self.state.pending.append(record)
            window = speed = None
            if step % r.train.log_every == 0 or step == total:
                elapsed = time.perf_counter() - window_start
                window = average_records(self.state.pending)
                speed = {"step": step, "seconds": elapsed, "examples_per_s": window_examples / max(elapsed, 1e-9),
                         "processes": self.world}
                self.state.pending, window_start, window_examples = [], time.perf_counter(), 0
            self.events.emit(events.StepEnded(step, total, record, window, speed))
            evaluated, paused = False, time.perf_counter()  # evaluation and checkpoints are not training time
            if step % r.eval.every == 0 or step == total:
                # a signal before this evaluation checkpoints with the evaluation still owed; resume runs it
                self.state.pending_eval = True
                self._check_signal()
                evaluated = True
                if self._evaluate_at(step):
                    break
            if evaluated or step % r.checkpoint.every == 0:
                self.save_checkpoint()
            window_start += time.perf_counter() - paused
            self._check_signal()
        if not self.state.evaluations or self.state.evaluations[-1]["step"] != self.state.step:
            self.evaluate(self.state.step)

    def _evaluate_at(self, step: int) -> bool:
        """Evaluate at ``step``; True when early stopping ends the run here."""
        r = self.recipe
        self.evaluate(step)
        if r.eval.patience is not None and self.state.evals_since_best >= r.eval.patience and step < r.train.steps:
            self.state.stopped_early = True
            self.folder.write_summary(self.state)
            return True
        return False


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.run_dir) if recipe.run_dir else new_run_dir(recipe.name)
