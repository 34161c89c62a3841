"""Logger ``jsonl``: the run's own record, ``metrics.jsonl`` and ``speed.jsonl`` (always on).

``metrics.jsonl``: one line per logging window (``train.log_every`` steps): the averaged loss, every
term unweighted, each weight, lr, grad norm, skipped steps. It is deterministic bit for bit, so a
resumed run's file equals an uninterrupted run's. Wall-clock figures (seconds, examples/s) go to
``speed.jsonl`` instead. On resume, lines after the checkpoint's step are dropped first.
"""

from __future__ import annotations

import json
from pathlib import Path

from latentbridge.api.events import RunStarted, StepEnded
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.logger import Logger
from latentbridge.io.atomic import append_jsonl

METRICS = "metrics.jsonl"
SPEED = "speed.jsonl"


def step_of(line: str, default: int) -> int:
    """The step of a JSONL line; a line cut short by a kill counts as ``default``."""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return default


def truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of ``path`` at or before ``step`` (a half-written last line goes too)."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines(keepends=True) if step_of(line, step + 1) <= step]
        path.write_text("".join(kept))


class JsonlLogger(Logger):
    """metrics.jsonl (deterministic) and speed.jsonl (wall clock), one line per logging window."""

    name = "jsonl"

    def on_run_started(self, event: RunStarted) -> None:
        if event.resumed_from is not None:
            for name in (METRICS, SPEED):
                truncate_after(self.run_dir / name, event.resumed_from)

    def on_step_ended(self, event: StepEnded) -> None:
        if event.window is not None:
            append_jsonl(self.run_dir / METRICS, event.window)
        if event.speed is not None:
            append_jsonl(self.run_dir / SPEED, event.speed)


@hookimpl
def register_loggers(register):
    register(JsonlLogger)
