"""What changes during training (what a checkpoint must hold), and the two ways a run stops early."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PREEMPT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def install_signal_handlers(handler: Callable[[int, Any], None],
                            names: Sequence[str] = PREEMPT_SIGNALS) -> dict[int, Any]:
    """``handler`` for each signal of ``names`` this platform has; the handlers it replaced. Outside the main
    thread none is installed (Python allows it there only): the caller's own handling stands."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {getattr(signal, n): signal.signal(getattr(signal, n), handler) for n in names if hasattr(signal, n)}


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class Preempted(Exception):
    """A stop signal ended the run with what it made saved; ``detail`` says what, when not a checkpoint of
    ``step`` (a run stopped while it prepared)."""

    def __init__(self, signal_name: str, step: int, detail: str | None = None):
        super().__init__(f"{signal_name} at step {step}")
        self.signal_name, self.step, self.detail = signal_name, step, detail


class Diverged(Exception):
    def __init__(self, step: int, count: int, last_checkpoint: int | None):
        super().__init__(f"{count} non-finite losses in a row at step {step}")
        self.step, self.count, self.last_checkpoint = step, count, last_checkpoint


@dataclass
class RunState:
    """Everything that changes during training (what a checkpoint must hold)."""

    step: int = 0
    best_accuracy: float | None = None  # bridged accuracy on dev (selection never reads test)
    best_step: int | None = None
    evals_since_best: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    nonfinite_in_a_row: int = 0
    stopped_early: bool = False
    pending: list[dict[str, Any]] = field(default_factory=list)  # metrics since the last written line
    pending_eval: bool = False  # preempted during the evaluation of `step`
    last_checkpoint: int | None = None
    test: dict[str, Any] = field(default_factory=dict)  # the end-of-run test evaluations: "final", "best"
