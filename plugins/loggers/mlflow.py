"""Logger ``mlflow``: MLflow tracking (``pip install "latentbridge[mlflow]"``), a local store by default.

By default the store is the folder ``mlruns/`` inside the run folder (a file store: nothing leaves
the machine; ``mlflow ui --backend-store-uri <run folder>/mlruns`` shows it); ``tracking_uri`` points
elsewhere (a server, ``sqlite:///...``). Params: the resolved recipe, flattened (``train.lr``, ...).
Metrics as the TensorBoard logger names them, with dots for slashes (``loss.nll``,
``test.bridged.accuracy``): MLflow's file store cannot hold both ``loss`` and ``loss/nll``. The bridge card is logged as an artifact at the end,
and a resumed run continues the same MLflow run (its id is kept in ``mlflow_run_id``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from latentbridge.plugins.loggers.tensorboard import evaluation_scalars, scalars

from latentbridge.api.events import EvaluationEnded, RunEnded, RunStarted, StepEnded
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.logger import Logger, LoggerConfig
from latentbridge.api.options import option

RUN_ID_FILE = "mlflow_run_id"
STATUS = {"finished": "FINISHED", "preempted": "KILLED", "stopped": "FAILED", "failed": "FAILED"}


@dataclass
class MlflowConfig(LoggerConfig):
    tracking_uri: str | None = option(None, help="MLflow tracking URI (default: a file store in <run folder>/mlruns)")
    experiment: str = option("latentbridge", help="MLflow experiment name")


def flatten(data, prefix: str = "") -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(data) if not isinstance(data, str) else data}


def mlflow_key(key: str) -> str:
    """MLflow's file store keeps a metric in a file named by its key, so ``loss`` and ``loss/nll`` cannot
    both exist: slashes become dots (``loss.nll``, ``test.bridged.accuracy``)."""
    return key.replace("/", ".")


class MlflowLogger(Logger):
    """MLflow: the recipe as params, every metric, the bridge card as an artifact; local store by default."""

    name = "mlflow"
    Config = MlflowConfig
    requires = ("mlflow",)
    extra = "mlflow"

    def tracking_uri(self) -> str:
        if self.config.tracking_uri:
            return self.config.tracking_uri
        # MLflow 3 keeps the file store only on request; it is what a local, offline run wants
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return (self.run_dir / "mlruns").resolve().as_uri()

    def on_run_started(self, event: RunStarted) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.tracking_uri())
        saved = self.run_dir / RUN_ID_FILE
        if event.resumed_from is not None and saved.is_file():
            self.run_id = saved.read_text().strip()
            return
        experiment = self.client.get_experiment_by_name(self.config.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.config.experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id
        saved.write_text(self.run_id + "\n")
        params = [Param(k, v[:6000]) for k, v in sorted(flatten(event.recipe).items())]
        for start in range(0, len(params), 100):  # the batch limit of log_batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def _log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_step_ended(self, event: StepEnded) -> None:
        values = scalars(event.window) if event.window is not None else {}
        if event.speed is not None:
            values["speed/examples_per_s"] = float(event.speed["examples_per_s"])
        self._log(values, event.step)

    def on_evaluation_ended(self, event: EvaluationEnded) -> None:
        self._log(evaluation_scalars(event), event.step)

    def on_run_ended(self, event: RunEnded) -> None:
        card = self.run_dir / "bridge_card.json"
        if card.is_file():
            self.client.log_artifact(self.run_id, str(card))
        self.client.set_terminated(self.run_id, status=STATUS.get(event.status, "FAILED"))


@hookimpl
def register_loggers(register):
    register(MlflowLogger)
