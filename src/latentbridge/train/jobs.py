"""Training as a library call: what ``latentbridge run`` does, for a script or a notebook.

    import latentbridge as lb
    result = lb.train_recipe("answer_softplus", ["train.steps=50"], run_dir="runs/demo")
    result.final["systems"]["bridged"]["accuracy"]

Preemption and divergence raise :class:`~latentbridge.train.state.Preempted` and
:class:`~latentbridge.train.state.Diverged` (the CLI turns them into exit codes 75 and 3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentbridge.config.recipe import Recipe, load_recipe
from latentbridge.errors import LatentBridgeError
from latentbridge.train.state import RunState


@dataclass
class TrainResult:
    """A finished run: its folder, its final state and final evaluation."""

    run_dir: Path
    state: RunState

    @property
    def final(self) -> dict[str, Any]:
        """The test evaluation of the final weights (per system: accuracy, interval, ...)."""
        return self.state.test["final"]

    @property
    def best(self) -> dict[str, Any] | None:
        """The test evaluation of the weights chosen on dev (``best/``)."""
        return self.state.test.get("best")

    @property
    def best_step(self) -> int | None:
        """The step of the best dev evaluation."""
        return self.state.best_step


def find_resume_dir(name: str, given: str | Path | None, root: str | Path = "runs") -> Path:
    """The run folder to resume: ``given`` (the recipe's ``run_dir``), else the newest unfinished run of
    the recipe ``name`` under ``root``."""
    if given:
        folder = Path(given)
        if not (folder / "run.json").is_file():
            raise LatentBridgeError(f"{folder} holds no run to resume")
        return folder
    candidates = sorted(Path(root).glob(f"{name}-*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for info in candidates:
        if json.loads(info.read_text()).get("status") != "finished":
            return info.parent
    if candidates:
        raise LatentBridgeError(f"nothing to resume: the runs of '{name}' in {root}/ are finished; give run_dir=...")
    raise LatentBridgeError(f"nothing to resume: no run of '{name}' in {root}/; give run_dir=...")


def choose_run_dir(recipe: Recipe, resume: bool) -> Path:
    """Where the run goes: the folder to resume, or a new one (refusing a folder that holds a run)."""
    from latentbridge.train.runner import default_run_dir

    if resume:
        return find_resume_dir(recipe.name, recipe.run_dir)
    folder = default_run_dir(recipe)
    if (folder / "run.json").exists():
        raise LatentBridgeError(f"{folder} already holds a run; add --resume to continue it, or choose another run_dir")
    return folder


def train_recipe(
    recipe: str | Path | Recipe,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    consumers: Iterable[Any] = (),
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train and evaluate a recipe (a shipped recipe's name, a YAML file, or a loaded :class:`Recipe`).

    ``run_dir`` sets where the run is written (default: ``runs/<name>-<time>-<random>``); ``resume``
    continues its newest checkpoint. ``consumers`` receive every run event (see
    :mod:`latentbridge.api.events`); ``log`` gets the lines printed while the models load."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.runtime.distributed import rank
    from latentbridge.train.runner import Runner

    resolved = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    if run_dir is not None:
        resolved.run_dir = str(run_dir)
    resume = resume or resolved.resume
    # under torchrun the folder was chosen once, before the processes started (all get the same run_dir)
    folder = Path(resolved.run_dir) if rank() != 0 and resolved.run_dir else choose_run_dir(resolved, resume)
    experiment = Experiment.build(resolved, log=log or (lambda _: None))
    state = Runner(experiment, folder, consumers=consumers).run(resume=resume)
    return TrainResult(folder, state)
