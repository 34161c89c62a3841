"""Logger ``wandb``: Weights & Biases (``pip install "latentbridge[wandb]"``), offline by default.

With ``mode: offline`` (the default) nothing leaves the machine: the run folder gets a ``wandb/``
directory that ``wandb sync <run folder>/wandb/offline-run-*`` uploads later. ``mode: online`` logs
live (it needs a login and the network). The resolved recipe is the run's config; metrics as the
TensorBoard logger names them (``loss/<term>``, ``lr``, ``<split>/<system>/accuracy``, ...).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from latentbridge.plugins.loggers.tensorboard import evaluation_scalars, scalars

from latentbridge.api.events import EvaluationEnded, RunEnded, RunStarted, StepEnded
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.logger import Logger, LoggerConfig
from latentbridge.api.options import option


@dataclass
class WandbConfig(LoggerConfig):
    project: str = option("latentbridge", help="W&B project")
    entity: str | None = option(None, help="W&B entity (team or user); default: yours")
    mode: Literal["offline", "online", "disabled"] = option(
        "offline", help="'offline': files only, upload later with `wandb sync`; 'online': live (needs the network)")
    tags: list[str] = option(default_factory=list, help="tags of the W&B run")


def run_id(name: str) -> str:
    """A W&B run id for a run folder (stable, so a resumed run continues the same W&B run)."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class WandbLogger(Logger):
    """Weights & Biases: the recipe as config, every metric; offline by default (`wandb sync` later)."""

    name = "wandb"
    Config = WandbConfig
    requires = ("wandb",)
    extra = "wandb"

    def on_run_started(self, event: RunStarted) -> None:
        import wandb

        c = self.config
        self.run = wandb.init(
            project=c.project, entity=c.entity, mode=c.mode, dir=str(self.run_dir), name=self.run_dir.name,
            id=run_id(self.run_dir.name), resume="allow", config=event.recipe, tags=list(c.tags),
            settings=wandb.Settings(silent=True, console="off"),
        )

    def on_step_ended(self, event: StepEnded) -> None:
        values = scalars(event.window) if event.window is not None else {}
        if event.speed is not None:
            values["speed/examples_per_s"] = float(event.speed["examples_per_s"])
        if values:
            self.run.log(values, step=event.step)

    def on_evaluation_ended(self, event: EvaluationEnded) -> None:
        self.run.log(evaluation_scalars(event), step=event.step)

    def on_run_ended(self, event: RunEnded) -> None:
        self.run.summary["status"] = event.status
        self.run.finish(exit_code=0 if event.status == "finished" else 1)


@hookimpl
def register_loggers(register):
    register(WandbLogger)
