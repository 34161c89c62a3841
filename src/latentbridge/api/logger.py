"""The Logger interface: an experiment logger, chosen in the recipe, that consumes run events.

A recipe names its loggers (``loggers: [tensorboard]`` or ``loggers: {wandb: {project: x}}``); each is
built with its validated config and the run folder, then receives every event of the run through
:meth:`Logger.on_run_event`, which dispatches to the ``on_*`` methods a subclass overrides. A logger
whose library is an optional extra lists the modules it imports in ``requires`` and the extra's name
in ``extra``: choosing it without them installed is a recipe problem, reported before any model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from latentbridge.api import events
from latentbridge.api.hookspecs import hookimpl


@dataclass
class LoggerConfig:
    """Fields every logger has (none yet); subclasses add their own."""

    def check(self) -> list[tuple[str, str]]:
        return []


class Logger:
    """Consumes run events. Subclasses set ``name`` and ``Config`` and override the ``on_*`` methods."""

    name: ClassVar[str]
    Config: ClassVar[type[LoggerConfig]] = LoggerConfig
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules this logger needs
    extra: ClassVar[str | None] = None  # the pip extra that installs them: latentbridge[<extra>]
    main_process_only: ClassVar[bool] = True  # under torchrun, only rank 0 gets events

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """The modules in ``requires`` that cannot be imported here."""
        return [module for module in cls.requires if importlib.util.find_spec(module) is None]

    def __init__(self, config: LoggerConfig, run_dir: Path):
        self.config = config
        self.run_dir = Path(run_dir)

    @hookimpl
    def on_run_event(self, event: events.RunEvent) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            getattr(self, handler)(event)

    def on_run_started(self, event: events.RunStarted) -> None: ...

    def on_step_ended(self, event: events.StepEnded) -> None: ...

    def on_evaluation_progress(self, event: events.EvaluationProgress) -> None: ...

    def on_evaluation_ended(self, event: events.EvaluationEnded) -> None: ...

    def on_checkpoint_written(self, event: events.CheckpointWritten) -> None: ...

    def on_message(self, event: events.Message) -> None: ...

    def on_run_ended(self, event: events.RunEnded) -> None: ...


_HANDLERS = {
    events.RunStarted: "on_run_started",
    events.StepEnded: "on_step_ended",
    events.EvaluationProgress: "on_evaluation_progress",
    events.EvaluationEnded: "on_evaluation_ended",
    events.CheckpointWritten: "on_checkpoint_written",
    events.Message: "on_message",
    events.RunEnded: "on_run_ended",
}
