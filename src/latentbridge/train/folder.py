"""The run folder of one training run, as the runner writes it: header, status, index, weights, summary.

Only the main process writes (under torchrun every method is a no-op elsewhere). ``run.json`` holds
what was run (models by hash, plugins, versions, command, the source checkout's commit and whether its
tree was clean, at the start and at each resume) and the current status; each status change
replaces the previous status's details (an old ``error`` never stands beside ``finished``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from latentbridge._version import __version__
from latentbridge.io import card, checkpoint
from latentbridge.io.atomic import write_json_atomic
from latentbridge.io.rundir import claim, git_state, index_run
from latentbridge.io.weights import OBJECTIVES_FILE, save_translator
from latentbridge.train.state import RunState

# details that belong to one status only: replaced at every status change
STATUS_DETAILS = ("error", "step", "signal", "reason", "last_checkpoint", "final_step", "best_step", "phase",
                  "solutions")
INDEXED_DETAILS = ("reason", "signal", "error")


class RunFolder:
    def __init__(self, path: Path, experiment: Any, bridge_card: dict[str, Any], main: bool = True):
        self.path = Path(path)
        self.exp = experiment
        self.recipe = experiment.recipe
        self.card = bridge_card
        self.main = main

    def header(self) -> dict[str, Any]:
        b = self.exp.bridge
        git = git_state()
        return {
            "recipe": self.recipe.name,
            "recipe_hash": self.card["recipe_hash"],
            "overrides": list(self.recipe.overrides),
            "latentbridge": __version__,
            "git_commit": git["commit"],  # kept for older readers; the same as git.commit
            "git": git,  # commit, clean, diff_digest: see latentbridge.io.rundir.git_state
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "plugins": self.exp.plugin_versions(),
            "models": {"source": b.source.describe(), "target": b.target.describe()},
            "translator": {**b.translator.describe(), "parameters": b.translator.num_parameters()},
            "trust_remote_code": self.recipe.models.trust_remote_code,
            "torch": torch.__version__,
            "status": "running",
        }

    def claim(self, info: dict[str, Any], state: RunState) -> None:
        """Create the folder with ``run.json`` (refused if a run holds it) and the resolved recipe."""
        if not self.main:
            return
        existing = self.path / "run.json"
        if existing.is_file() and not any((self.path / "checkpoints").glob("step_*")):
            # the folder this run claimed while it prepared (train_recipe), or one whose run stopped before its
            # first checkpoint: nothing of a run is there to lose (a new run never gets here: choose_run_dir
            # refuses a folder holding run.json unless it is resumed)
            write_json_atomic(existing, info)
        else:
            claim(self.path, info)
        (self.path / "recipe.yaml").write_text(self.recipe.to_yaml())
        self.index("running", state)

    def read_info(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    def set_status(self, status: str, state: RunState, **details: Any) -> None:
        if not self.main:
            return
        path = self.path / "run.json"
        data = {k: v for k, v in self.read_info().items() if k not in STATUS_DETAILS}
        data.update(status=status, **details)
        write_json_atomic(path, data)
        self.index(status, state, **details)

    def index(self, status: str, state: RunState, **details: Any) -> None:
        """A line in runs/index.jsonl: id, recipe, overrides, status and, once there are any, final metrics."""
        final = state.test.get("final") or (state.evaluations[-1] if state.evaluations else None)
        metrics = None
        if final is not None:
            metrics = {"step": final["step"], "split": final.get("split", "test"), **{
                s: v["accuracy"] for s, v in final["systems"].items() if v is not None}}
        index_run(self.path, {"recipe": self.recipe.name, "recipe_hash": self.card["recipe_hash"],
                              "overrides": list(self.recipe.overrides), "status": status, "final": metrics,
                              "best_step": state.best_step,
                              **{k: v for k, v in details.items() if k in INDEXED_DETAILS}})

    def save_weights(self, folder: Path, **extra: Any) -> None:
        """The translator (safetensors + JSON), the objectives' own parameters and the bridge card."""
        if not self.main:
            return
        save_translator(self.exp.translator, folder, extra=extra)
        card.write_card(folder, self.card)
        state = checkpoint.module_tensors(self.exp.objectives)
        if state:
            save_file(state, str(folder / OBJECTIVES_FILE))

    def write_summary(self, state: RunState) -> None:
        if not self.main:
            return
        write_json_atomic(self.path / "summary.json", {
            "recipe": self.recipe.name,
            "evaluations": state.evaluations,
            "best": {"step": state.best_step, "bridged_accuracy": state.best_accuracy, "split": "dev"},
            "test": state.test,
            "final_step": state.evaluations[-1]["step"] if state.evaluations else None,
            "stopped_early": state.stopped_early,
        })

    def rewind(self, ckpt: checkpoint.Checkpoint, state: RunState) -> None:
        """Bring the folder back to the checkpoint: later evaluations and the best copy go (the loggers
        rewind their own files when the resumed run starts)."""
        if not self.main:
            return
        step = ckpt.step
        for path in self.path.glob("eval_samples_dev_step_*.jsonl"):
            n = int(path.stem.rsplit("_", 1)[1])
            if n > step or (n == step and state.pending_eval):
                path.unlink()
        done = {state.test[k]["step"] for k in state.test if "step" in state.test[k]}
        for path in self.path.glob("eval_samples_test*_step_*.jsonl"):
            if int(path.stem.rsplit("_", 1)[1]) not in done:
                path.unlink()
        best = self.path / "best"
        if best.is_dir():
            shutil.rmtree(best)
        if (ckpt.folder / "best").is_dir():
            shutil.copytree(ckpt.folder / "best", best)
        if state.evaluations:
            self.write_summary(state)
        # the tree each resume ran from: a run resumed from changed code is not the committed code's run
        resumes = [*self.read_info().get("resumes", []), {"step": step, "git": git_state()}]
        self.set_status("running", state, resumed_from=step, resumes=resumes)
