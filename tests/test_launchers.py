"""Sweeps through launchers: N cells at once on this machine, or a job array through submitit.

Each cell is a ``latentbridge run`` process on the session's tiny random pair. What must hold: two workers
give byte-identical runs to one after another (same threads per run); submitit's local executor runs the
array and a preempted cell requeues and ends with exactly the weights of an uninterrupted run; a cell that
fails does not stop the others and is named; a stop signal stops every cell with a checkpoint (exit 75) and
rerunning continues; bad input is one line and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from latentbridge.cli.main import app

from .helpers import recipe_dict
from .slurm_cluster import diagnosis

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAST = ["train.steps=4", "train.warmup_steps=0", "eval.every=4"]
cli = CliRunner()


def _recipe(tmp_path: Path, pair, *overrides: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(pair, *overrides)))
    return path


def sweep(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentbridge", "sweep", *map(str, args)], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _outputs(folder: Path) -> dict[str, bytes]:
    """What a run computed: its weights and every evaluated item (timings excluded: they differ)."""
    files = sorted([*folder.rglob("translator.safetensors"), *folder.rglob("eval_samples_*.jsonl")])
    assert files
    return {str(f.relative_to(folder)): f.read_bytes() for f in files}


def _status(folder: Path) -> str:
    return json.loads((folder / "run.json").read_text())["status"]


def test_two_local_workers_give_the_runs_of_a_sequential_sweep(tmp_path, random_pair):
    recipe = _recipe(tmp_path, random_pair)
    one = sweep(recipe, *FAST, "--seeds", 2, "--out", tmp_path / "one", "--threads", 1)
    assert one.returncode == 0, one.stdout + one.stderr
    two = sweep(recipe, *FAST, "--seeds", 2, "--out", tmp_path / "two", "--jobs", 2, "--threads", 1)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "started tiny seed 1" in two.stdout and (tmp_path / "two" / "logs" / "tiny-seed1.log").is_file()
    for seed in (0, 1):
        a, b = _outputs(tmp_path / "one" / f"tiny-seed{seed}"), _outputs(tmp_path / "two" / f"tiny-seed{seed}")
        assert a == b
    assert _outputs(tmp_path / "one" / "tiny-seed0") != _outputs(tmp_path / "one" / "tiny-seed1")  # seeds differ
    assert (tmp_path / "two" / "report" / "report.md").is_file()


def test_a_failed_cell_does_not_stop_the_others_and_is_named(tmp_path, random_pair):
    recipe = _recipe(tmp_path, random_pair)
    broken = tmp_path / "broken-model"
    broken.mkdir()  # passes the recipe's checks, fails when the run loads it
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = sweep(recipe, *FAST, "--grid", f"models.source={random_pair['llama']},{broken}", "--out", out,
                       "--jobs", jobs)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 cell(s) failed" in result.stdout and "broken-model" in result.stdout.split("failed")[-1]
        finished = [f for f in out.iterdir() if (f / "run.json").is_file() and _status(f) == "finished"]
        assert len(finished) == 1 and (out / "report" / "report.md").is_file()


def test_dry_run_lists_the_cells_and_runs_nothing(tmp_path, random_pair):
    recipe = _recipe(tmp_path, random_pair)
    result = sweep(recipe, *FAST, "--grid", "translator.k=2,3", "--seeds", 2, "--out", tmp_path / "s", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all("(new)" in line for line in lines)
    assert str(tmp_path / "s" / "translator.k-3-seed1") in result.stdout
    assert not (tmp_path / "s").exists()


def test_submitit_local_executor_runs_the_array(tmp_path, random_pair):
    pytest.importorskip("submitit")
    recipe = _recipe(tmp_path, random_pair)
    out = tmp_path / "array"
    result = sweep(recipe, *FAST, "--seeds", 2, "--out", out, "--launcher", "slurm", "--slurm-executor", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 2 cell(s) as job array" in result.stdout
    assert all(_status(out / f"tiny-seed{s}") == "finished" for s in (0, 1))
    assert list((out / "slurm").glob("*_log.out")) and (out / "report" / "report.md").is_file()


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _steps_logged(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return sum('"loss"' in line for line in metrics.read_text().splitlines())


def _task_process(folder: Path) -> int | None:
    """The submitit task process (the parent of the cell's ``latentbridge run``) of a sweep folder."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in cmd and str(folder).encode() in cmd:
                return int(entry.name)
    return None


def _assert_resumed_as_uninterrupted(out: Path, cell: Path, recipe: Path, tmp_path: Path) -> None:
    """The cell's task logs say it checkpointed on SIGUSR1 and resumed from it, and the cell computed what a
    run of the same recipe never interrupted computes."""
    log = "".join(p.read_text() for p in (out / "slurm").glob("*_log.out"))
    assert "SIGUSR1: stopped after step" in log and "resuming from checkpoint at step" in log
    reference = tmp_path / "reference"
    ran = subprocess.run([sys.executable, "-m", "latentbridge", "run", str(recipe), f"run_dir={reference}"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert _outputs(cell) == _outputs(reference)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the task process through /proc")
def test_a_preempted_cell_requeues_and_ends_as_an_uninterrupted_run(tmp_path, random_pair):
    """SIGUSR1 (SLURM's signal before the time limit) to the array task: the run writes its checkpoint, the
    task requeues, the run resumes and ends with the very weights of a run never interrupted."""
    pytest.importorskip("submitit")
    recipe = _recipe(tmp_path, random_pair, "train.steps=150", "train.log_every=1", "train.warmup_steps=0",
                     "eval.every=150")
    out = tmp_path / "array"
    process = subprocess.Popen([sys.executable, "-m", "latentbridge", "sweep", str(recipe), "--out", str(out),
                                "--launcher", "slurm", "--slurm-executor", "local"], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cell = out / "tiny-seed0"
        _wait_for(lambda: _steps_logged(cell) >= 3, 300, "the cell's third step")
        os.kill(_task_process(out / "slurm"), signal.SIGUSR1)
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, output
    _assert_resumed_as_uninterrupted(out, cell, recipe, tmp_path)


def test_a_stop_signal_checkpoints_every_running_cell_and_rerunning_continues(tmp_path, random_pair):
    recipe = _recipe(tmp_path, random_pair, "train.steps=150", "train.log_every=1", "train.warmup_steps=0",
                     "eval.every=150")
    out = tmp_path / "s"
    args = [sys.executable, "-m", "latentbridge", "sweep", str(recipe), "--seeds", "2", "--out", str(out), "--jobs", "2"]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: all(_steps_logged(out / f"tiny-seed{s}") >= 2 for s in (0, 1)), 300, "both cells training")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 75, output
    assert "SIGINT: stopping 2 running cell(s)" in output
    assert all(_status(out / f"tiny-seed{s}") == "preempted" for s in (0, 1))
    again = sweep(recipe, "--seeds", 2, "--out", out, "--jobs", 2)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(_status(out / f"tiny-seed{s}") == "finished" for s in (0, 1))
    assert "resuming from checkpoint" in (out / "logs" / "tiny-seed0.log").read_text()


@pytest.mark.parametrize(("args", "line"), [
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--launcher", "pbs"], "--launcher must be 'local' or 'slurm'"),
    (["--partition", "gpu"], "go with --launcher slurm"),
    (["--launcher", "slurm"], "no `sbatch` on PATH"),
    (["--launcher", "slurm", "--slurm-executor", "local", "--time", "0"], "--time-min must be at least 1"),
])
def test_bad_launcher_input_is_one_line_and_exit_2(tmp_path, random_pair, monkeypatch, args, line):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    recipe = _recipe(tmp_path, random_pair)
    result = cli.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2, result.output
    assert line in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_slurm_without_submitit_says_how_to_install_it(tmp_path, random_pair, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    recipe = _recipe(tmp_path, random_pair)
    result = cli.invoke(app, ["sweep", str(recipe), "--launcher", "slurm", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "pip install 'latentbridge[slurm]'" in result.stderr


def test_a_launcher_block_sets_the_slurm_options(tmp_path):
    from latentbridge.cli.sweep import slurm_launcher

    block = tmp_path / "cluster.yaml"
    block.write_text("launcher: {partition: gpu, time: 30, gpus: 1, mem: 16, array_parallelism: 4}\n")
    launcher = slurm_launcher(tmp_path, block, {"time_min": 45, "partition": None})
    assert (launcher.partition, launcher.time_min, launcher.gpus_per_node, launcher.mem_gb,
            launcher.array_parallelism) == ("gpu", 45, 1, 16.0, 4)  # the command line wins
    block.write_text("launcher: {partitoin: gpu}\n")
    from latentbridge.errors import LatentBridgeError

    with pytest.raises(LatentBridgeError, match="launcher.partitoin: unknown setting.*partition"):
        slurm_launcher(tmp_path, block, {})


# -- a real SLURM (tests/slurm_cluster.py): the daemons of the distribution's packages, on this machine ---------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from .slurm_cluster import local_slurm, missing

    why = missing()
    if why:
        pytest.skip(why)
    with local_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def test_a_real_slurm_runs_a_two_cell_array(tmp_path, random_pair, slurm):
    pytest.importorskip("submitit")
    recipe = _recipe(tmp_path, random_pair)
    out = tmp_path / "array"
    result = subprocess.run([sys.executable, "-m", "latentbridge", "sweep", str(recipe), *FAST, "--seeds", "2",
                             "--out", str(out), "--launcher", "slurm", "--cpus", "1", "--time", "10"],
                            env={**ENV, **slurm}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(_status(out / f"tiny-seed{s}") == "finished" for s in (0, 1))
    assert list((out / "slurm").glob("*_submission.sh"))  # submitted through sbatch
    assert (out / "report" / "report.md").is_file()


def test_a_real_slurm_requeues_a_signalled_cell_and_it_resumes_exactly(tmp_path, random_pair, slurm):
    """SIGUSR1 to the job (what SLURM sends before the time limit): the cell checkpoints, the job requeues
    and ends as an uninterrupted run."""
    pytest.importorskip("submitit")
    recipe = _recipe(tmp_path, random_pair, "train.steps=150", "train.log_every=1", "train.warmup_steps=0",
                     "eval.every=150")
    out = tmp_path / "array"
    env = {**ENV, **slurm}
    printed = tmp_path / "sweep.out"  # a file, not a pipe: nothing reads it while the test polls SLURM
    with printed.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "latentbridge", "sweep", str(recipe), "--out", str(out),
                                    "--launcher", "slurm", "--cpus", "1", "--time", "10"], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        cell = out / "tiny-seed0"
        _wait_for(lambda: _steps_logged(cell) >= 3, 300, "the cell's third step")
        jobs = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True).stdout.split()
        assert len(jobs) == 1
        subprocess.run(["scancel", "--signal=USR1", jobs[0]], env=env, check=True)

        def job(field: str) -> str:  # one squeue field of the job, "" once SLURM no longer lists it
            return subprocess.run(["squeue", "-h", "-j", jobs[0], "-o", field], env=env, capture_output=True,
                                  text=True, timeout=30).stdout.strip()

        def node_idle() -> bool:
            return subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True,
                                  timeout=30).stdout.strip() == "idle"

        def failed(why: str) -> None:
            logs = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n"
                           for p in sorted((out / "slurm").glob("*_log.*")))
            pytest.fail(f"{why}:\n{diagnosis(env)}\n--- sweep\n{printed.read_text()[-3000:]}\n{logs}")

        _wait_for(lambda: job("%t") == "PD", 120, "the job to requeue")
        # SLURM holds a requeued job back for about two minutes before it may start again; what is tested is the
        # requeue, not that delay, so the test starts it sooner. CI once saw the started job never end (not
        # reproduced here); a guess is a launch refused because the first run's credential, revoked at the
        # requeue, is told apart from the new one by whole seconds, which SLURM answers by holding the job
        # ("launch failed requeued held"). Hence: start it only once the node is idle again (or SLURM started it
        # itself), in a later second than the requeue; release it once if SLURM held it after a failed launch
        # (any other hold, or a second one, fails the test); and fail with what SLURM says, never hang
        _wait_for(lambda: node_idle() or job("%t") != "PD", 180, "the node to clean up after the first run")
        time.sleep(1.5)
        if job("%t") == "PD":
            subprocess.run(["scontrol", "update", f"JobId={jobs[0]}", "StartTime=now"], env=env, timeout=30)
        deadline, released = time.monotonic() + 600, False
        while process.poll() is None:
            reason = job("%r")
            if time.monotonic() > deadline:
                failed(f"the requeued job did not run to its end within 10 minutes ({reason or 'no longer listed'})")
            if reason == "launch failed requeued held" and not released:
                released = True
                subprocess.run(["scontrol", "release", jobs[0]], env=env, timeout=30)
            elif "held" in reason.lower():
                failed(f"SLURM holds the requeued job ({reason})")
            time.sleep(2)
    finally:
        process.kill()
    assert process.returncode == 0, printed.read_text()
    _assert_resumed_as_uninterrupted(out, cell, recipe, tmp_path)
