"""Logger ``tensorboard``: scalars for TensorBoard (``pip install "latentbridge[tensorboard]"``).

Written into ``<run folder>/tensorboard/`` (``dir``): every loss term (``loss``, ``loss/<term>``), each
weight, ``lr``, ``grad_norm``, ``speed/examples_per_s`` at every logging window, and at each evaluation
every system's accuracy and the ends of its 95% interval (``<split>/<system>/accuracy``, ``.../ci_low``,
``.../ci_high``; the test evaluation of the dev-chosen weights as ``test_best/...``). A resumed run purges what was logged after its checkpoint. View with
``tensorboard --logdir runs/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentbridge.api.events import EvaluationEnded, RunEnded, RunStarted, StepEnded
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.logger import Logger, LoggerConfig
from latentbridge.api.options import option


@dataclass
class TensorBoardConfig(LoggerConfig):
    dir: str = option("tensorboard", help="folder of the event files, inside the run folder")
    flush_secs: int = option(30, gt=0, help="how often the writer flushes to disk, in seconds")


def scalars(values: dict) -> dict[str, float]:
    """The numeric entries of a metrics line (``step`` and nulls left out)."""
    return {k: float(v) for k, v in values.items()
            if k not in ("step", "steps_averaged") and isinstance(v, int | float) and not isinstance(v, bool)}


def evaluation_scalars(event: EvaluationEnded) -> dict[str, float]:
    """``<split>/<system>/accuracy`` (and ``ci_low``, ``ci_high``); the test evaluation of the weights chosen
    on dev goes under ``test_best/`` so that it never shares a name with the final weights' ``test/``."""
    out: dict[str, float] = {}
    split = f"{event.split}_best" if event.summary.get("weights") == "best" else event.split
    for system, s in event.summary["systems"].items():
        if s is None:
            continue
        prefix = f"{split}/{system}"
        out[f"{prefix}/accuracy"] = float(s["accuracy"])
        out[f"{prefix}/ci_low"], out[f"{prefix}/ci_high"] = (float(x) for x in s["ci95"])
    return out


class TensorBoardLogger(Logger):
    """Scalars of every loss term, lr, grad norm, speed and each system's accuracy, for TensorBoard."""

    name = "tensorboard"
    Config = TensorBoardConfig
    requires = ("tensorboard",)
    extra = "tensorboard"

    def on_run_started(self, event: RunStarted) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = event.resumed_from + 1 if event.resumed_from is not None else None
        self.writer = SummaryWriter(str(self.run_dir / self.config.dir), purge_step=purge,
                                    flush_secs=self.config.flush_secs)

    def on_step_ended(self, event: StepEnded) -> None:
        if event.window is not None:
            for key, value in scalars(event.window).items():
                self.writer.add_scalar(key, value, event.step)
        if event.speed is not None:
            self.writer.add_scalar("speed/examples_per_s", event.speed["examples_per_s"], event.step)

    def on_evaluation_ended(self, event: EvaluationEnded) -> None:
        for key, value in evaluation_scalars(event).items():
            self.writer.add_scalar(key, value, event.step)

    def on_run_ended(self, event: RunEnded) -> None:
        self.writer.close()


@hookimpl
def register_loggers(register):
    register(TensorBoardLogger)
