"""Provenance: run.json records whether the source checkout was clean (and a digest of what was not),
and benchmarks/outcome_tables.py publishes only runs made from a commit that holds their recipe
(lesson 17 of the design notes)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from latentbridge.errors import LatentBridgeError
from latentbridge.io import rundir
from latentbridge.io.rundir import git_commit, git_state, source_checkout
from latentbridge.report.provenance import provenance_problems
from latentbridge.train import folder as run_folder

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "report" / "results"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                          *args], cwd=repo, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    return out.stdout.strip()


def commit_all(repo: Path, message: str = "c") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git checkout with one committed file and an ignored folder."""
    path = tmp_path / "checkout"
    path.mkdir()
    git(path, "init", "-q")
    (path / "code.py").write_text("x = 1\n")
    (path / ".gitignore").write_text("ignored/\n")
    commit_all(path)
    return path


# -- what run.json records ---------------------------------------------------------------------------

def test_a_clean_checkout_records_its_commit_clean_and_no_digest(repo):
    state = git_state(repo)
    assert state == {"commit": git(repo, "rev-parse", "HEAD"), "clean": True, "diff_digest": None}
    assert git_commit(repo) == state["commit"]


def test_a_changed_file_makes_the_tree_dirty_and_the_digest_follows_the_diff(repo):
    (repo / "code.py").write_text("x = 2\n")
    first = git_state(repo)
    assert first["clean"] is False and first["diff_digest"].startswith("sha256:")
    assert git_state(repo) == first  # the same diff, the same digest
    (repo / "code.py").write_text("x = 3\n")
    second = git_state(repo)
    assert second["clean"] is False and second["diff_digest"] != first["diff_digest"]
    git(repo, "add", "code.py")  # staged changes count the same
    assert git_state(repo) == second
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    assert git_state(repo)["clean"] is True and git_state(repo)["diff_digest"] is None


def test_untracked_files_count_by_name_and_content_and_ignored_ones_do_not(repo):
    (repo / "ignored").mkdir()
    (repo / "ignored" / "checkpoint.bin").write_bytes(b"\0" * 10)
    assert git_state(repo)["clean"] is True
    (repo / "new_recipe.yaml").write_text("lr: 1\n")
    first = git_state(repo)
    assert first["clean"] is False and first["diff_digest"] is not None
    (repo / "new_recipe.yaml").write_text("lr: 2\n")  # same name, other content
    second = git_state(repo)
    assert second["diff_digest"] not in (None, first["diff_digest"])
    (repo / "new_recipe.yaml").rename(repo / "other_recipe.yaml")  # same content, other name
    assert git_state(repo)["diff_digest"] not in (None, first["diff_digest"], second["diff_digest"])


def test_outside_a_checkout_every_value_is_null(tmp_path, repo):
    (tmp_path / "plain").mkdir()
    assert git_state(tmp_path / "plain") == {"commit": None, "clean": None, "diff_digest": None}
    # an installed package inside an ignored folder of some repository (a virtualenv) is not that checkout
    (repo / "ignored" / "site-packages").mkdir(parents=True)
    (repo / "ignored" / "site-packages" / "module.py").write_text("")
    assert source_checkout(repo / "ignored" / "site-packages") is None
    assert git_state(repo / "ignored" / "site-packages")["commit"] is None
    assert source_checkout(repo) == Path(git(repo, "rev-parse", "--show-toplevel"))


def test_git_that_hangs_or_is_missing_gives_nulls_quickly(tmp_path, repo, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(rundir, "GIT_TIMEOUT_S", 0.5)
    start = time.monotonic()
    assert git_state(repo) == {"commit": None, "clean": None, "diff_digest": None}
    assert time.monotonic() - start < 10
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert git_state(repo)["commit"] is None and git_commit(repo) is None


def test_the_run_header_and_each_resume_record_the_tree(tmp_path, monkeypatch):
    states = iter([{"commit": "a" * 40, "clean": True, "diff_digest": None},
                   {"commit": "a" * 40, "clean": False, "diff_digest": "sha256:feed"}])
    monkeypatch.setattr(run_folder, "git_state", lambda: next(states))
    describe = SimpleNamespace(describe=lambda: {}, num_parameters=lambda: 1)
    experiment = SimpleNamespace(
        recipe=SimpleNamespace(name="r", overrides=(), models=SimpleNamespace(trust_remote_code=False)),
        bridge=SimpleNamespace(source=describe, target=describe, translator=describe),
        plugin_versions=lambda: {})
    folder = run_folder.RunFolder(tmp_path / "run", experiment, {"recipe_hash": "h"})
    header = folder.header()
    assert header["git"] == {"commit": "a" * 40, "clean": True, "diff_digest": None}
    assert header["git_commit"] == "a" * 40  # the older key, kept
    rundir.claim(folder.path, header)
    state = SimpleNamespace(test={}, evaluations=[], best_step=None, pending_eval=False)
    folder.rewind(SimpleNamespace(step=3, folder=tmp_path / "ckpt"), state)
    info = folder.read_info()
    assert info["git"]["clean"] is True
    assert info["resumes"] == [{"step": 3, "git": {"commit": "a" * 40, "clean": False, "diff_digest": "sha256:feed"}}]


# -- what outcome_tables.py publishes -----------------------------------------------------------------

@pytest.fixture
def history(tmp_path) -> SimpleNamespace:
    """A repository whose first commit lacks the recipe ``r`` and whose second holds it."""
    path = tmp_path / "history"
    (path / "src" / "latentbridge").mkdir(parents=True)
    (path / "plugins" / "tasks").mkdir(parents=True)
    git(path, "init", "-q")
    (path / "src" / "latentbridge" / "recipe.py").write_text("FIELDS = ('name', 'train', 'steps', 'task')\n")
    (path / "plugins" / "tasks" / "arith.py").write_text("class Arith: ...\n")
    before = commit_all(path)
    (path / "recipes").mkdir()
    (path / "recipes" / "r.yaml").write_text("name: r\ntrain: {steps: 1}\n")
    with_recipe = commit_all(path)
    (path / "src" / "latentbridge" / "recipe.py").write_text("FIELDS = ('name', 'train', 'steps', 'task', 'supervise')\n")
    with_option = commit_all(path)
    return SimpleNamespace(path=path, before=before, with_recipe=with_recipe, with_option=with_option)


def kept_run(root: Path, git_record: dict | None = None, commit: str | None = None, **recipe) -> Path:
    folder = root / f"run-{len(list(root.glob('run-*'))) if root.is_dir() else 0}"
    folder.mkdir(parents=True)
    info = {"recipe": "r", "git_commit": commit, "status": "finished",
            "plugins": {"task:arith": {"distribution": "latentbridge", "module": "latentbridge.plugins.tasks.arith"}}}
    if git_record is not None:
        info["git"] = git_record
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "recipe.yaml").write_text(json.dumps({"name": "r", "train": {"steps": 1}, **recipe}))
    return folder


def test_a_run_from_a_clean_commit_holding_its_recipe_is_published(tmp_path, history):
    good = kept_run(tmp_path / "runs", {"commit": history.with_recipe, "clean": True, "diff_digest": None},
                    history.with_recipe)
    assert provenance_problems(good, history.path) == []
    older = kept_run(tmp_path / "runs", commit=history.with_recipe)  # recorded before the clean flag
    assert provenance_problems(older, history.path) == []


def test_a_run_from_a_dirty_tree_is_refused(tmp_path, history):
    dirty = kept_run(tmp_path / "runs", {"commit": history.with_recipe, "clean": False, "diff_digest": "sha256:beef"},
                     history.with_recipe)
    problems = provenance_problems(dirty, history.path)
    assert len(problems) == 1 and "dirty tree" in problems[0] and "sha256:beef" in problems[0]
    unknown = kept_run(tmp_path / "runs", {"commit": history.with_recipe, "clean": None, "diff_digest": None})
    assert any("whether the tree was clean" in p for p in provenance_problems(unknown, history.path))
    resumed = kept_run(tmp_path / "runs", {"commit": history.with_recipe, "clean": True, "diff_digest": None})
    info = json.loads((resumed / "run.json").read_text())
    info["resumes"] = [{"step": 5, "git": {"commit": history.with_recipe, "clean": False, "diff_digest": "sha256:1"}}]
    (resumed / "run.json").write_text(json.dumps(info))
    assert provenance_problems(resumed, history.path) == ["resumed at step 5 on a dirty tree (uncommitted changes "
                                                          f"sha256:1 over {history.with_recipe[:7]})"]


def test_a_run_whose_commit_lacks_its_recipe_or_an_option_is_refused(tmp_path, history):
    runs = tmp_path / "runs"
    no_recipe = kept_run(runs, {"commit": history.before, "clean": True, "diff_digest": None})
    assert provenance_problems(no_recipe, history.path) == [f"commit {history.before[:7]} lacks its recipe recipes/r.yaml"]
    legacy = kept_run(runs, commit=history.before)  # judged by the commit check alone
    assert provenance_problems(legacy, history.path) == [f"commit {history.before[:7]} lacks its recipe recipes/r.yaml"]
    supervised = {"task": {"supervise": "final_line"}}
    early = kept_run(runs, commit=history.with_recipe, **supervised)
    assert provenance_problems(early, history.path) == [
        f"commit {history.with_recipe[:7]} does not know the recipe's option task.supervise"]
    assert provenance_problems(kept_run(runs, commit=history.with_option, **supervised), history.path) == []
    assert "from no recorded commit" in provenance_problems(kept_run(runs), history.path)[0]
    stranger = kept_run(runs, commit="f" * 40)
    assert provenance_problems(stranger, history.path) == [f"commit fffffff is not in the history of {history.path}"]
    plugin = kept_run(runs, commit=history.with_option)
    info = json.loads((plugin / "run.json").read_text())
    info["plugins"]["task:facts"] = {"distribution": "latentbridge", "module": "latentbridge.plugins.tasks.facts"}
    (plugin / "run.json").write_text(json.dumps(info))
    assert provenance_problems(plugin, history.path) == [
        f"commit {history.with_option[:7]} lacks the plugin task:facts (latentbridge.plugins.tasks.facts)"]


def test_a_recipe_whose_base_the_commit_lacks_is_refused(tmp_path, history):
    (history.path / "recipes" / "r.yaml").write_text("base: parent\nname: r\n")
    child_only = commit_all(history.path)
    run = kept_run(tmp_path / "runs", commit=child_only)
    assert provenance_problems(run, history.path) == [f"commit {child_only[:7]} lacks its recipe recipes/parent.yaml"]
    (history.path / "recipes" / "parent.yaml").write_text("train: {steps: 1}\n")
    both = commit_all(history.path)
    assert provenance_problems(kept_run(tmp_path / "runs", commit=both), history.path) == []


def outcome_tables():
    spec = importlib.util.spec_from_file_location("outcome_tables_provenance", ROOT / "benchmarks" / "outcome_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outcome_tables_refuse_an_unverified_run_unless_named(tmp_path, history, monkeypatch, capsys):
    """The fixture's runs given a clean commit that holds their recipes: published; one made dirty: the
    tables are refused (exit 2) naming it, unless --allow-unverified names it."""
    path = history.path
    for name in ("phase1_full", "ablB_kl_only", "prompt_softonly_phase2_swap", "contrastive_softonly", "answer_softplus"):
        (path / "recipes" / f"{name}.yaml").write_text(f"name: {name}\n")
    (path / "src" / "latentbridge" / "options.py").write_text(
        "OPTIONS = ('eval', 'dev_n', 'n', 'objectives', 'kl', 'weight', 'run_dir', 'seed', 'translator', 'k',"
        " 'projection')\n")
    commit = commit_all(path)
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    for info_path in sorted(results.glob("runs/*/*/run.json")):
        info = json.loads(info_path.read_text())
        info["git"] = {"commit": commit, "clean": True, "diff_digest": None}
        info_path.write_text(json.dumps(info))
    tables = outcome_tables()
    monkeypatch.setattr(tables, "REPO", path)
    assert tables.write_tables(results, tmp_path / "out", log=lambda _: None)

    dirty = results / "runs" / "softonly" / "contrastive_softonly-seed1" / "run.json"
    info = json.loads(dirty.read_text())
    info["git"] = {"commit": commit, "clean": False, "diff_digest": "sha256:abc"}
    dirty.write_text(json.dumps(info))
    with pytest.raises(LatentBridgeError, match=r"1 kept run was not made from committed code") as refused:
        tables.write_tables(results, tmp_path / "out", log=lambda _: None)
    assert str(refused.value).splitlines()[1:] == [
        f"  softonly/contrastive_softonly-seed1: made on a dirty tree (uncommitted changes sha256:abc over {commit[:7]})"]
    capsys.readouterr()
    assert tables.main(["tables", "--results", str(results)]) == 2
    assert "softonly/contrastive_softonly-seed1: made on a dirty tree" in capsys.readouterr().err
    assert tables.main(["tables", "--results", str(results), "--allow-unverified", "softonly/contrastive_*"]) == 0
    err = capsys.readouterr().err
    assert "warning: published by --allow-unverified: softonly/contrastive_softonly-seed1: made on a dirty tree" in err
    assert tables.main(["tables", "--results", str(results), "--allow-unverified", "seed_table"]) == 2  # another sweep
