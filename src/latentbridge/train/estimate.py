"""``latentbridge validate --estimate``: what a recipe will cost, from a short measured probe.

The probe loads the recipe's models and translator, takes a few real training steps (the same
:class:`~latentbridge.train.runner.Runner` step a run takes) in a temporary folder with its own empty
caches, and measures parameters, memory and seconds per step. Nothing is written to the user's run
folders or caches. With ``source.view: generation`` it first makes the source's solutions for the
probe's batches, timed, since a run makes them all before its first step.
"""

from __future__ import annotations

import copy
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from latentbridge.config.recipe import Recipe
from latentbridge.errors import LatentBridgeError

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _status_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.M).group(1)) * 1024


class PeakMemory:
    """Memory a block of work adds at its peak, above what was held before it: on CUDA the allocator's
    peak (``max_memory_allocated``) above the allocated bytes before; on Linux CPUs the process's peak
    resident set (``VmHWM``, reset before) above its resident set before. ``extra`` is None where neither
    can be read (another OS)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.extra: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            try:
                PROC_CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
                self._before = _status_bytes("VmRSS")
            except OSError:
                self._before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.extra = torch.cuda.max_memory_allocated(self.device) - self._before
        elif self._before is not None:
            self.extra = max(0, _status_bytes("VmHWM") - self._before)


@dataclass
class Estimate:
    recipe: str
    device: str
    source_parameters: int
    target_parameters: int
    trainable_parameters: int
    frozen_bytes: int  # source + target weights
    trainable_bytes: int
    optimizer_bytes: int
    step_extra_bytes: int | None  # what a step adds at its peak (activations, gradients, slack)
    batch_size: int
    probe_steps: int
    step_seconds: float | None  # median over the probe's steps (after one warm-up step); None: nothing trains
    train_steps: int
    solve_seconds_per_prompt: float | None  # source.view: generation
    prompts_to_solve: int | None

    @property
    def static_bytes(self) -> int:
        return self.frozen_bytes + self.trainable_bytes + self.optimizer_bytes

    @property
    def peak_bytes(self) -> int | None:
        return None if self.step_extra_bytes is None else self.static_bytes + self.step_extra_bytes

    @property
    def train_seconds(self) -> float | None:
        return None if self.step_seconds is None else self.step_seconds * self.train_steps

    @property
    def solve_seconds(self) -> float | None:
        if self.solve_seconds_per_prompt is None or self.prompts_to_solve is None:
            return None
        return self.solve_seconds_per_prompt * self.prompts_to_solve

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "static_bytes": self.static_bytes, "peak_bytes": self.peak_bytes,
                "train_seconds": self.train_seconds, "solve_seconds": self.solve_seconds}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate(recipe: Recipe, probe_steps: int = 3, log: Callable[[str], None] = lambda _: None) -> Estimate:
    """Measure ``recipe``'s cost over ``probe_steps`` training steps (after one warm-up step)."""
    from latentbridge.bridge.build import Experiment, solved_prompts
    from latentbridge.train.data_order import DataOrder
    from latentbridge.train.runner import Runner

    if probe_steps < 1:
        raise ValueError("probe_steps must be at least 1")
    with tempfile.TemporaryDirectory(prefix="latentbridge-estimate-") as tmp:
        probe = copy.deepcopy(recipe)
        probe.cache.dir = str(Path(tmp) / "cache")  # cold, and nothing lands in the user's caches
        probe.run_dir = str(Path(tmp) / "run")
        exp = Experiment.build(probe, log=log, solve_upfront=False)
        runner = Runner(exp, Path(tmp) / "run")
        t = probe.train
        device = exp.bridge.target.device
        solve_per_prompt = to_solve = None
        if exp.bridge.solutions is not None:  # a run solves every prompt before its first step: time it alone
            order = DataOrder(len(runner.train_examples), probe.seed)
            picked = order.take(t.batch_size * t.grad_accum * (probe_steps + 1))
            prompts = [exp.task.prompt(runner.train_examples[i]) for i in picked]
            log(f"solving {len(prompts)} prompts with the source")
            start = time.perf_counter()
            with torch.no_grad():
                exp.bridge.solutions.get(prompts)
            _sync(device)
            solve_per_prompt = (time.perf_counter() - start) / max(1, len(set(p.for_source for p in prompts)))
            to_solve = len(set(p.for_source for p in solved_prompts(probe, exp.task)))
        frozen = exp.bridge.source.model, exp.bridge.target.model
        params = exp.trainable_parameters()
        optimizer, times, peak = 0, [], PeakMemory(device)
        if params and t.steps > 0:  # a training-free recipe (train.steps: 0) takes no step to time
            try:
                log("warm-up step")
                runner.train_step(1)  # also creates the optimizer's state
                optimizer = tensor_bytes(v for s in runner.optimizer.state.values() for v in s.values()
                                         if torch.is_tensor(v))
                runner.optimizer.zero_grad(set_to_none=True)  # the gradients are the step's own: inside the window
                with peak:
                    for step in range(2, 2 + probe_steps):
                        start = time.perf_counter()
                        runner.train_step(step)
                        _sync(device)
                        times.append(time.perf_counter() - start)
                        log(f"step {step - 1}/{probe_steps}: {times[-1]:.3f} s")
            except torch.OutOfMemoryError as exc:
                raise LatentBridgeError(f"--estimate: a training step of '{recipe.name}' ran out of memory on "
                                        f"{device} (batch {t.batch_size}); try a smaller train.batch_size with "
                                        "train.grad_accum") from exc
        return Estimate(
            recipe=recipe.name, device=str(device),
            source_parameters=sum(p.numel() for p in frozen[0].parameters()),
            target_parameters=sum(p.numel() for p in frozen[1].parameters()),
            trainable_parameters=sum(p.numel() for p in params),
            frozen_bytes=tensor_bytes(frozen[0].parameters()) + tensor_bytes(frozen[1].parameters()),
            trainable_bytes=tensor_bytes(params), optimizer_bytes=optimizer, step_extra_bytes=peak.extra,
            batch_size=t.batch_size * t.grad_accum, probe_steps=len(times),
            step_seconds=statistics.median(times) if times else None,
            train_steps=t.steps, solve_seconds_per_prompt=solve_per_prompt, prompts_to_solve=to_solve,
        )


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe(e: Estimate) -> list[tuple[str, str]]:
    """The estimate as (what, figure) rows."""
    rows = [
        ("parameters", f"source {_count(e.source_parameters)} and target {_count(e.target_parameters)} (frozen); "
                       f"trainable {_count(e.trainable_parameters)}"),
        ("static memory", f"{_bytes(e.static_bytes)}: frozen weights {_bytes(e.frozen_bytes)}, trainable "
                          f"{_bytes(e.trainable_bytes)}, optimizer state {_bytes(e.optimizer_bytes)}"),
    ]
    if e.step_seconds is None:
        rows.append(("training", "none: train.steps is 0 or nothing is trainable (no step to time)"))
    else:
        rows += [
            ("peak memory in a step", "not measurable on this platform" if e.peak_bytes is None else
             f"{_bytes(e.peak_bytes)} (a step adds {_bytes(e.step_extra_bytes)} at its peak: activations, gradients)"),
            ("seconds per step", f"{e.step_seconds:.3f} s at batch {e.batch_size} (median of {e.probe_steps}, "
                                 "caches cold)"),
            ("training", f"{e.train_steps:,} steps ≈ {_duration(e.train_seconds)} (evaluations not counted; with "
                         "cache.source, epochs after the first run faster)"),
        ]
    if e.solve_seconds is not None:
        rows.append(("source solutions", f"{e.solve_seconds_per_prompt:.3f} s per prompt; {e.prompts_to_solve:,} "
                                         f"prompts ≈ {_duration(e.solve_seconds)} before the first step (once: cached)"))
    return rows
