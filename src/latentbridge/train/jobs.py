"""Training as a library call: what ``latentbridge run`` does, for a script or a notebook.

    import latentbridge as lb
    result = lb.train_recipe("answer_softplus", ["train.steps=50"], run_dir="runs/demo")
    result.final["systems"]["bridged"]["accuracy"]

Preemption and divergence raise :class:`~latentbridge.train.state.Preempted` and
:class:`~latentbridge.train.state.Diverged` (the CLI turns them into exit codes 75 and 3).
"""

from __future__ import annotations

import contextlib
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


def choose_run_dir(recipe: Recipe, resume: bool, force: bool = False) -> Path:
    """Where the run goes: the folder to resume, or a new one (refusing a folder that holds a run, and one
    that holds anything else unless ``force``)."""
    from latentbridge.train.runner import default_run_dir

    if resume:
        return find_resume_dir(recipe.name, recipe.run_dir)
    folder = default_run_dir(recipe)
    if (folder / "run.json").exists():
        raise LatentBridgeError(f"{folder} already holds a run; add --resume to continue it, or choose another run_dir")
    if folder.is_file():
        raise LatentBridgeError(f"run_dir {folder} is a file, not a folder")
    foreign = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    taken = [name for name in foreign if name in RUN_NAMES or name.startswith(("eval_samples_", "eval_"))]
    if taken:  # even with --force: a run would overwrite (or, failing, remove) them
        raise LatentBridgeError(f"run_dir {folder} holds {', '.join(taken[:3])}, which a run writes; choose another "
                                "run_dir (--force writes among other files, never over a run's own)")
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise LatentBridgeError(f"run_dir {folder} holds files that are not a run's ({shown}); choose an empty or "
                                "new folder, or add --force to write the run among them")
    return folder


def train_recipe(
    recipe: str | Path | Recipe,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    consumers: Iterable[Any] = (),
    log: Callable[[str], None] | None = None,
    force: bool = False,
) -> TrainResult:
    """Train and evaluate a recipe (a shipped recipe's name, a YAML file, or a loaded :class:`Recipe`).

    ``run_dir`` sets where the run is written (default: ``runs/<name>-<time>-<random>``; a folder holding
    other files is refused unless ``force``); ``resume`` continues its newest checkpoint. ``consumers`` receive every run event (see
    :mod:`latentbridge.api.events`); ``log`` gets the lines printed while the models load."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.bridge.solutions import SolvingStopped
    from latentbridge.runtime.distributed import rank
    from latentbridge.train.runner import Runner
    from latentbridge.train.state import Preempted, install_signal_handlers, restore_signal_handlers

    resolved = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    if run_dir is not None:
        resolved.run_dir = str(run_dir)
    resume = resume or resolved.resume
    # under torchrun the folder was chosen once, before the processes started (all get the same run_dir)
    folder = Path(resolved.run_dir) if rank() != 0 and resolved.run_dir else choose_run_dir(resolved, resume, force)
    log = log or (lambda _: None)
    main = rank() == 0
    resume_from_preparing = resume and not has_checkpoint(folder)
    if resume_from_preparing:  # stopped while preparing: start it again, in its folder
        same_recipe(folder, resolved)
        log(f"{folder}: stopped before its first checkpoint; starting it again there (solutions made are kept)")
        resume = False
    claimed = main and not resume and not resume_from_preparing
    if claimed:
        claim_preparing(folder, resolved)  # the folder exists from the first second
    stop = StopFlag()
    previous = install_signal_handlers(stop.on_signal)
    try:
        experiment = Experiment.build(resolved, log=log, should_stop=stop.name)
        if stop.signal is not None:  # a signal while the models loaded
            raise SolvingStopped(stop.signal, 0, 0)
    except BaseException as exc:
        restore_signal_handlers(previous)
        if isinstance(exc, SolvingStopped):
            if main:
                mark_preparing_stopped(folder, exc)
            what = (f"{exc.done}/{exc.total} of the source's solutions saved" if exc.total
                    else "stopped while the models loaded")
            raise Preempted(exc.signal_name, 0, detail=f"stopped before training: {what}") from None
        if isinstance(exc, LatentBridgeError):  # a problem with the input: no run folder left behind for it
            if claimed:
                release_preparing(folder)
        elif main and (folder / "run.json").is_file():  # it says why it holds no run (--resume starts it again)
            mark_preparing_failed(folder, exc)
        raise
    # the flag stays until the runner's own handlers are in: a signal in between is the runner's to honour
    runner = Runner(experiment, folder, consumers=consumers)
    runner.inherited_signal = stop.name
    try:
        state = runner.run(resume=resume)
    finally:
        restore_signal_handlers(previous)
    return TrainResult(folder, state)


class StopFlag:
    """SIGTERM, SIGINT and SIGUSR1 while a run prepares (models loading, the source solving) are noted, not
    fatal: the preparation stops at its next batch with what it made saved. A second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def name(self) -> str | None:
        return self.signal

    def on_signal(self, signum: int, frame: Any) -> None:
        import signal

        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name


PREPARING = "preparing"
# what a run folder holds (besides eval_samples_*.jsonl and eval_<step>/): never overwritten by a new run
RUN_NAMES = frozenset({"run.json", "recipe.yaml", "metrics.jsonl", "speed.jsonl", "summary.json", "bridge_card.json",
                       "translator.json", "translator.safetensors", "objectives.safetensors", "best", "checkpoints",
                       "tensorboard", "report"})


def claim_preparing(folder: Path, recipe: Recipe) -> None:
    """Claim ``folder`` for a new run before anything loads: ``run.json`` (status ``preparing``, exclusive
    create: a folder holding a run is refused) and the resolved recipe."""
    import sys
    import time

    from latentbridge.io.rundir import claim

    claim(folder, {"recipe": recipe.name, "overrides": list(recipe.overrides), "command": sys.argv,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": PREPARING})
    (folder / "recipe.yaml").write_text(recipe.to_yaml())


def same_recipe(folder: Path, recipe: Recipe) -> None:
    """Refuse to start ``folder``'s run again with another recipe than the one it was claimed with."""
    from latentbridge.io.card import recipe_hash

    saved = folder / "recipe.yaml"
    if not saved.is_file():
        return
    held = load_recipe(str(saved))
    if recipe_hash(held.to_dict()) != recipe_hash(recipe.to_dict()):
        raise LatentBridgeError(f"{folder} holds a run of another recipe; resume with the run's own recipe: "
                                f"latentbridge run {saved} run_dir={folder} --resume")


def release_preparing(folder: Path) -> None:
    """Undo :func:`claim_preparing`: its two files, and the folder if nothing else is in it."""
    for name in ("run.json", "recipe.yaml"):
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is there: leave it
        folder.rmdir()


def has_checkpoint(folder: Path) -> bool:
    return any((folder / "checkpoints").glob("step_*"))


def mark_preparing_failed(folder: Path, exc: BaseException) -> None:
    from latentbridge.io.atomic import write_json_atomic

    path = folder / "run.json"
    data = json.loads(path.read_text())
    if data.get("status") == PREPARING:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        data.update(status="failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted", error=error,
                    phase=PREPARING)
        write_json_atomic(path, data)


def mark_preparing_stopped(folder: Path, stopped: Any) -> None:
    """``run.json`` of a run stopped while it prepared: preempted, in which phase, how far it got."""
    from latentbridge.io.atomic import write_json_atomic

    path = folder / "run.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(status="preempted", signal=stopped.signal_name)
    if not has_checkpoint(folder):  # stopped before its first step: say how far it got
        data.update(step=0, phase=PREPARING, solutions={"done": stopped.done, "total": stopped.total})
    write_json_atomic(path, data)
