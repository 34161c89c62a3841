"""The run folder: what a run records, written so that a crash never leaves half a file behind.

    runs/<name>-<YYYYmmdd-HHMMSS>-<rand>/
      recipe.yaml                 the resolved recipe (every default filled in)
      run.json                    plugins and versions, models, git commit and tree state, command, status
      metrics.jsonl               one line per logged step: every loss term, weights, lr, grad norm
      speed.jsonl                 wall-clock figures per logged step (examples/s, seconds)
      eval_samples_step_<N>.jsonl one record per test item and system at each evaluation
      summary.json                every evaluation's accuracies with 95% intervals and McNemar test
      translator.safetensors/json the final translator
      best/                       a true copy of the best translator (by bridged accuracy)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.io.atomic import dumps, file_sha256, json_safe


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


GIT_TIMEOUT_S = 10
# git run without a pager, a prompt, colours, external diff tools, or an optional lock on the index
# (a concurrent `git commit` never fails because a run looked at the tree)
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "GIT_PAGER": "cat", "PAGER": "cat", "LC_ALL": "C"}
_GIT_CONFIG = ("-c", "color.ui=never", "-c", "core.quotepath=on", "-c", "diff.noprefix=false",
               "-c", "diff.mnemonicprefix=false", "-c", "diff.relative=false")


def git_output(args: list[str], cwd: Path) -> bytes | None:
    """``git args`` in ``cwd``: its stdout, or None when git is missing, fails or takes too long.
    Nothing reaches the terminal and nothing waits on input."""
    try:
        out = subprocess.run(["git", *_GIT_CONFIG, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=GIT_TIMEOUT_S, env={**os.environ, **_GIT_ENV}, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def source_checkout(start: Path | None = None) -> Path | None:
    """The git checkout that holds the latentbridge source being run (``start``: a folder of it, by
    default this package's own folder), or None when the package is not a tracked file of a checkout
    (installed from a wheel, even into a virtualenv inside some repository)."""
    package = Path(start) if start is not None else Path(__file__).resolve().parents[1]
    top = git_output(["rev-parse", "--show-toplevel"], package)
    if top is None:
        return None
    root = Path(os.fsdecode(top.strip()))
    tracked = git_output(["ls-files", "-z", "--", "."], package)
    return root if tracked else None


def _untracked(root: Path) -> list[str] | None:
    out = git_output(["ls-files", "-z", "--others", "--exclude-standard", "--", "."], root)
    return None if out is None else sorted(os.fsdecode(p) for p in out.split(b"\0") if p)


def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes (of a link's target text, for a symbolic link)."""
    if path.is_symlink():
        return hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest()
    try:
        return file_sha256(path)
    except OSError as exc:  # unreadable: still counts, by its name and the error
        return hashlib.sha256(f"unreadable: {exc.strerror}".encode()).hexdigest()


def git_state(start: Path | None = None) -> dict[str, Any]:
    """What ``run.json``'s ``git`` records about the checkout of the latentbridge source
    (:func:`source_checkout`): ``commit`` (HEAD), ``clean`` (no change against HEAD, staged or not, and
    no untracked file that .gitignore does not ignore) and ``diff_digest``: None when clean, else
    "sha256:" + the sha256 of ``git diff HEAD --binary`` followed by each untracked file's path and the
    sha256 of its bytes (so the digest changes when the diff or an untracked file changes). Outside a
    checkout, or when git fails, every value is None (``clean`` alone when only the diff failed)."""
    unknown = {"commit": None, "clean": None, "diff_digest": None}
    root = source_checkout(start)
    commit = None if root is None else git_output(["rev-parse", "--verify", "HEAD^{commit}"], root)
    if root is None or commit is None:
        return unknown
    diff = git_output(["diff", "HEAD", "--binary", "--full-index", "--no-color", "--no-ext-diff", "--no-textconv",
                 "--no-renames", "--ignore-submodules=none", "--", "."], root)
    untracked = _untracked(root)
    state = {"commit": commit.decode().strip(), "clean": None, "diff_digest": None}
    if diff is None or untracked is None:
        return state  # the commit, but not whether the tree matched it
    state["clean"] = not diff and not untracked
    if not state["clean"]:
        digest = hashlib.sha256(b"git diff HEAD --binary\0" + diff)
        for path in untracked:
            digest.update(b"\0untracked\0" + os.fsencode(path) + b"\0" + _file_digest(root / path).encode())
        state["diff_digest"] = "sha256:" + digest.hexdigest()
    return state


def git_commit(start: Path | None = None) -> str | None:
    """HEAD of the checkout holding ``start`` (default: the latentbridge source's checkout, see
    :func:`source_checkout`), or None outside one."""
    root = source_checkout() if start is None else Path(start)
    out = None if root is None else git_output(["rev-parse", "--verify", "HEAD^{commit}"], root)
    return None if out is None else out.decode().strip() or None
