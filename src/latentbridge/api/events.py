"""Run events: what the runner tells its consumers (the run's files, the console, experiment loggers).

The runner emits one event at each point of a run's life through the ``on_run_event`` hook. The
``metrics.jsonl`` / ``speed.jsonl`` writer, the progress display and the experiment loggers
(TensorBoard, W&B, MLflow) are ordinary consumers: a plugin that implements ``on_run_event`` sees the
same stream. Events are frozen dataclasses; dictionaries in them are plain JSON-ready data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    """A run begins (or resumes from ``resumed_from``). ``recipe``: the resolved recipe as plain data;
    ``info``: what ``run.json`` records (models, plugins, versions)."""

    run_dir: Path
    recipe: dict[str, Any]
    info: dict[str, Any]
    total_steps: int
    resumed_from: int | None = None


@dataclass(frozen=True)
class StepEnded:
    """One optimizer step is done. ``record``: this step's loss, every term unweighted (``loss/<name>``,
    null while a term is off), each weight (``weight/<name>``), lr, grad norm, skipped steps.
    ``window``: when this step closes a logging window (``train.log_every``), the averaged
    ``metrics.jsonl`` line, and ``speed`` its wall-clock figures; otherwise both None."""

    step: int
    total_steps: int
    record: dict[str, Any]
    window: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None


@dataclass(frozen=True)
class EvaluationProgress:
    """Generation for an evaluation advanced: ``done`` more items of ``total`` for ``what`` (a system)."""

    step: int
    what: str
    done: int
    total: int


@dataclass(frozen=True)
class EvaluationEnded:
    """An evaluation finished: ``summary`` per system (accuracy, interval, ...), on ``split``."""

    step: int
    split: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class CheckpointWritten:
    step: int
    path: Path


@dataclass(frozen=True)
class Message:
    """A line for the user (loading models, resuming, a damaged checkpoint skipped, ...)."""

    text: str


@dataclass(frozen=True)
class RunEnded:
    """The run stopped: ``status`` is finished, preempted, stopped (non-finite losses) or failed."""

    status: str
    step: int
    best_step: int | None = None
    error: str | None = None
    final: dict[str, Any] | None = field(default=None)


RunEvent = RunStarted | StepEnded | EvaluationProgress | EvaluationEnded | CheckpointWritten | Message | RunEnded
