"""Training a translator: the loop, evaluation, early stopping, checkpoints, resume and preemption.

Exit paths: the run finishes (status ``finished``); it is preempted by SIGTERM, SIGINT or SIGUSR1
(:class:`Preempted`: the current step completes, a checkpoint is written, status ``preempted``);
or it diverges (:class:`Diverged`: ``train.max_nonfinite`` non-finite losses in a row; nothing more
is written, the last good checkpoint stays, status ``stopped``).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from latentbridge._version import __version__
from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import Recipe
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.harness import EvalSettings, Evaluator, Interrupted
from latentbridge.io import card, checkpoint
from latentbridge.io.atomic import append_jsonl, write_json_atomic
from latentbridge.io.rundir import claim, git_commit, index_run, new_run_dir
from latentbridge.io.weights import save_translator
from latentbridge.train.data_order import DataOrder
from latentbridge.train.distributed import any_true, average_gradients, barrier, mean_values, rank, world_size
from latentbridge.train.loss import scheduled_weights, weighted_loss
from latentbridge.train.metrics import _step_of, average_records
from latentbridge.train.precision import autocast
from latentbridge.train.schedule import lr_factor
from latentbridge.train.state import PREEMPT_SIGNALS, Diverged, Preempted, RunState
from latentbridge.train.steps import StepBuilder


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
        dummy = [torch.nn.Parameter(torch.zeros(()))] if not self.params else self.params
        self.optimizer = torch.optim.AdamW(dummy, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total=t.steps, warmup=t.warmup_steps, schedule=t.schedule, min_ratio=t.min_lr_ratio),
        )
        self.state = RunState()
        self.card = card.bridge_card(experiment)
        self.signal_name: str | None = None
        self.evaluator = Evaluator(
            experiment.bridge,
            experiment.task,
            EvalSettings(n=r.eval.n, batch_size=r.eval.batch_size, max_new_tokens=r.eval.max_new_tokens,
                         stop=list(r.eval.stop), systems=list(r.eval.systems)),
            self.run_dir,
            progress=ui.eval_progress if ui else None,
            should_stop=lambda: any_true(self.signal_name is not None),
            autocast=r.models.autocast,
        )

    def autocast(self):
        target = self.exp.bridge.target
        return autocast(target.device, target.dtype, self.recipe.models.autocast)

    def log(self, message: str) -> None:
        if self.ui:
            self.ui.log(message)

    # -- the run folder ------------------------------------------------------------------------------

    def write_header(self) -> None:
        if not self.main:
            return
        b = self.exp.bridge
        claim(self.run_dir, {
            "recipe": self.recipe.name,
            "recipe_hash": self.card["recipe_hash"],
            "latentbridge": __version__,
            "git_commit": git_commit(),
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "plugins": self.exp.plugin_versions(),
            "models": {"source": b.source.describe(), "target": b.target.describe()},
            "translator": {**b.translator.describe(), "parameters": b.translator.num_parameters()},
            "trust_remote_code": self.recipe.models.trust_remote_code,
            "torch": torch.__version__,
            "status": "running",
        })
        (self.run_dir / "recipe.yaml").write_text(self.recipe.to_yaml())
        self.index("running")

    def set_status(self, status: str, **extra: Any) -> None:
        if not self.main:
            return
        path = self.run_dir / "run.json"
        data = json.loads(path.read_text())
        data.update(status=status, **extra)
        write_json_atomic(path, data)
        self.index(status, **extra)

    def index(self, status: str, **extra: Any) -> None:
        """A line in runs/index.jsonl: id, recipe, hash, status and, once there are any, final metrics."""
        final = self.state.evaluations[-1] if self.state.evaluations else None
        metrics = None
        if final is not None:
            metrics = {"step": final["step"], **{
                s: v["accuracy"] for s, v in final["systems"].items() if v is not None}}
        index_run(self.run_dir, {"recipe": self.recipe.name, "recipe_hash": self.card["recipe_hash"],
                                 "status": status, "final": metrics, "best_step": self.state.best_step,
                                 **{k: v for k, v in extra.items() if k in ("reason", "signal", "error")}})

    def save_weights(self, folder: Path, **extra: Any) -> None:
        if not self.main:
            return
        save_translator(self.exp.translator, folder, extra=extra)
        card.write_card(folder, self.card)
        state = checkpoint.module_tensors(self.exp.objectives)
        if state:
            from safetensors.torch import save_file

            save_file(state, str(folder / "objectives.safetensors"))

    # -- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        self.state.last_checkpoint = self.state.step
        if self.main:
            state = asdict(self.state)
            state["data"] = self.order.state()
            checkpoint.save_checkpoint(
                self.run_dir, self.state.step,
                translator=self.exp.translator, objectives=self.exp.objectives, optimizer=self.optimizer,
                scheduler=self.scheduler, generator=self.generator, state=state, card=self.card,
                keep=self.recipe.checkpoint.keep,
            )
        barrier()

    def restore(self) -> None:
        """Continue from the newest complete checkpoint: weights, optimizer, RNG, data position, files."""
        run_info = self.run_dir / "run.json"
        if not run_info.is_file():
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
        self.exp.translator.load_state_dict(ckpt.tensors("translator.safetensors"))
        objective_state = ckpt.tensors("objectives.safetensors")
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
        if self.main:
            self.rewind_files(ckpt)
        barrier()
        self.log(f"resuming from checkpoint at step {ckpt.step}")

    def rewind_files(self, ckpt: checkpoint.Checkpoint) -> None:
        """Bring the run folder back to the checkpoint: later metrics lines, evaluations and best go."""
        step = ckpt.step
        for name in ("metrics.jsonl", "speed.jsonl"):
            path = self.run_dir / name
            if path.is_file():
                kept = [line for line in path.read_text().splitlines(keepends=True) if _step_of(line, step + 1) <= step]
                path.write_text("".join(kept))
        for path in self.run_dir.glob("eval_samples_step_*.jsonl"):
            n = int(path.stem.rsplit("_", 1)[1])
            if n > step or (n == step and self.state.pending_eval):
                path.unlink()
        best = self.run_dir / "best"
        if best.is_dir():
            shutil.rmtree(best)
        if (ckpt.folder / "best").is_dir():
            shutil.copytree(ckpt.folder / "best", best)
        if self.state.evaluations:
            self.write_summary()
        self.set_status("running", resumed_from=step)

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
        per_process = t.batch_size // self.world
        part = slice(self.rank * per_process, (self.rank + 1) * per_process)
        for _ in range(t.grad_accum):
            # the global batch is drawn on every process alike; each takes its own slice of it
            examples = [self.train_examples[i] for i in self.order.take(t.batch_size)]
            with self.autocast():
                ctx = self.steps.context(step, examples, part)
                loss, values = weighted_loss(self.exp.objectives, ctx, weights)
            for name, value in values.items():
                terms[name] += value / t.grad_accum
            finite = finite and math.isfinite(loss.item())
            if finite:
                (loss / t.grad_accum).backward()
            total += sum(weights[n] * v for n, v in values.items()) / t.grad_accum
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
        try:
            result = self.evaluator.evaluate(step)
        except Interrupted:
            self.state.pending_eval = True
            raise
        self.state.pending_eval = False
        self.state.evaluations.append(result)
        bridged = result["systems"]["bridged"]["accuracy"]
        if self.state.best_accuracy is None or bridged > self.state.best_accuracy:
            self.state.best_accuracy, self.state.best_step = bridged, step
            self.state.evals_since_best = 0
            self.save_weights(self.run_dir / "best", step=step, bridged_accuracy=bridged)
        else:
            self.state.evals_since_best += 1
        self.write_summary()
        if self.ui:
            self.ui.evaluation(result)
        return result

    def write_summary(self) -> None:
        if not self.main:
            return
        write_json_atomic(self.run_dir / "summary.json", {
            "recipe": self.recipe.name,
            "evaluations": self.state.evaluations,
            "best": {"step": self.state.best_step, "bridged_accuracy": self.state.best_accuracy},
            "final_step": self.state.evaluations[-1]["step"] if self.state.evaluations else None,
            "stopped_early": self.state.stopped_early,
        })

    # -- signals -------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name

    def _install_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for name in PREEMPT_SIGNALS:
            if hasattr(signal, name):
                signum = getattr(signal, name)
                previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _check_signal(self) -> None:
        if any_true(self.signal_name is not None):  # all processes stop at the same step
            name = self.signal_name or "SIGTERM"
            self.save_checkpoint()
            self.set_status("preempted", signal=name, step=self.state.step)
            raise Preempted(name, self.state.step)

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> RunState:
        if resume:
            self.restore()
        else:
            self.write_header()
            self.save_checkpoint()  # step 0: a job killed before its first checkpoint still resumes
        previous = self._install_handlers()
        try:
            self._loop()
        except Interrupted:
            self._check_signal()
            raise
        except LatentBridgeError as exc:  # e.g. a plugin that raised: say so, keep every checkpoint
            self.set_status("failed", error=str(exc).splitlines()[0], step=self.state.step)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.save_weights(self.run_dir, step=self.state.step)
        self.save_checkpoint()
        self.set_status("finished", final_step=self.state.step, best_step=self.state.best_step)
        return self.state

    def _loop(self) -> None:
        r = self.recipe
        total = r.train.steps
        window_start, window_examples = time.perf_counter(), 0
        if self.ui:
            self.ui.start_training(total, self.state.step)
        if self.state.pending_eval:  # preempted at an evaluation step before it finished: do it now
            if self._evaluate_at(self.state.step):
                return  # early stopping: run() writes the final checkpoint
            self.save_checkpoint()
        for step in range(self.state.step + 1, total + 1):
            record = self.train_step(step)
            self.state.step = step
            if self.state.nonfinite_in_a_row >= r.train.max_nonfinite:
                self.set_status("stopped", reason=f"{self.state.nonfinite_in_a_row} non-finite losses in a row",
                                step=step, last_checkpoint=self.state.last_checkpoint)
                raise Diverged(step, self.state.nonfinite_in_a_row, self.state.last_checkpoint)
            window_examples += r.train.batch_size * r.train.grad_accum
            self.state.pending.append(record)
            if step % r.train.log_every == 0 or step == total:
                if self.main:
                    append_jsonl(self.run_dir / "metrics.jsonl", average_records(self.state.pending))
                    elapsed = time.perf_counter() - window_start
                    append_jsonl(self.run_dir / "speed.jsonl", {
                        "step": step, "seconds": elapsed, "examples_per_s": window_examples / max(elapsed, 1e-9),
                        "processes": self.world,
                    })
                self.state.pending, window_start, window_examples = [], time.perf_counter(), 0
            if self.ui:
                self.ui.training_step(step, record)
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
            self.write_summary()
            return True
        return False


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.run_dir) if recipe.run_dir else new_run_dir(recipe.name)
