"""The run folder: what a run records, written so that a crash never leaves half a file behind.

    runs/<name>-<YYYYmmdd-HHMMSS>-<rand>/
      recipe.yaml                 the resolved recipe (every default filled in)
      run.json                    plugins and versions, models, git commit, command, status
      metrics.jsonl               one line per logged step: every loss term, weights, lr, grad norm
      speed.jsonl                 wall-clock figures per logged step (examples/s, seconds)
      eval_samples_step_<N>.jsonl one record per test item and system at each evaluation
      summary.json                every evaluation's accuracies with 95% intervals and McNemar test
      translator.safetensors/json the final translator
      best/                       a true copy of the best translator (by bridged accuracy)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.io.atomic import dumps, json_safe


def new_run_dir(name: str, root: str | Path = "runs") -> Path:
    """A fresh folder name: timestamp plus 32 random bits, so concurrent jobs do not pick the same one
    (and the run claims its folder by creating run.json exclusively; see :func:`claim`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{name}-{stamp}-{secrets.token_hex(4)}"


def claim(run_dir: Path, record: dict[str, Any]) -> None:
    """Create ``run_dir/run.json`` only if no run holds the folder yet (exclusive create)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (run_dir / "run.json").open("x", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record), indent=2) + "\n")
    except FileExistsError:
        raise LatentBridgeError(f"{run_dir} already holds a run; add --resume to continue it, or choose another run_dir") from None


INDEX = "index.jsonl"


def index_run(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one line to the run index beside the run folder (``runs/index.jsonl``): the newest line
    of a run id is its current state. Lines are short and appended in one write, so concurrent jobs
    do not interleave them."""
    line = dumps({"run_id": run_dir.name, "run_dir": str(run_dir), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
    with (run_dir.parent / INDEX).open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def read_index(root: Path) -> dict[str, dict[str, Any]]:
    """The current state of every run in ``root/index.jsonl`` (the last line of each run id)."""
    path = Path(root) / INDEX
    runs: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            runs[record["run_id"]] = record
    return runs


def git_commit(start: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start or Path.cwd(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
