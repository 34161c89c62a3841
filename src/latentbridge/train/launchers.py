"""Where a sweep's cells run: ``local`` (N at once on this machine, each a ``latentbridge run`` process) or
``slurm`` (a job array through submitit).

A cell is one run of a sweep (:class:`Cell`): its recipe, every override it gets (the sweep's, its grid
values, ``seed=`` and ``run_dir=``) and its run folder. A launcher runs the cells it is given and returns
each one's outcome (:data:`OUTCOMES`); a cell that fails does not stop the others. A stop signal (SIGINT,
SIGTERM, SIGUSR1) reaches every running cell once: each writes a checkpoint and exits 75, no new cell
starts, and the sweep reports itself interrupted (rerunning the same command continues it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.train.state import PREEMPT_SIGNALS, install_signal_handlers, restore_signal_handlers

EXIT_DIVERGED, EXIT_PREEMPTED = 3, 75  # latentbridge run's exit codes
# finished; diverged (stopped by non-finite losses: reported, the sweep goes on); interrupted (a checkpoint
# was written: rerun to continue); failed (anything else: named at the end, with its log)
OUTCOMES = ("finished", "diverged", "interrupted", "failed")


@dataclass
class Cell:
    """One run of a sweep."""

    name: str  # "<configuration> seed <N>"
    recipe: str
    overrides: list[str]  # every override the run gets, ``run_dir=`` included
    folder: Path
    resume: bool = False
    log: Path | None = None  # where a launcher writes its output

    def command(self) -> list[str]:
        """The ``latentbridge run`` command line of this cell."""
        return [sys.executable, "-m", "latentbridge", "run", self.recipe, *self.overrides,
                *(["--resume"] if self.resume else [])]


def outcome_of(returncode: int) -> str:
    return {0: "finished", EXIT_DIVERGED: "diverged", EXIT_PREEMPTED: "interrupted"}.get(returncode, "failed")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cuda_devices() -> list[str]:
    """The CUDA devices this process may use (``CUDA_VISIBLE_DEVICES``, else every one torch sees)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001  (no CUDA at all)
        return []


@dataclass
class LocalLauncher:
    """Up to ``jobs`` cells at once, each a ``latentbridge run`` process in its own session (a stop signal
    reaches it once, forwarded by the sweep) with ``threads`` CPU threads (default: the cores divided among
    the jobs) and, where there are GPUs, its own share of them (worker slot ``i`` gets every ``jobs``-th
    device from ``i``). Each cell's output goes to its ``log``."""

    jobs: int
    threads: int | None = None
    log: Callable[[str], None] = print
    poll_seconds: float = 0.2
    devices: list[str] | None = None  # None: cuda_devices()
    _stop: str | None = field(default=None, init=False)
    _again: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise LatentBridgeError(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise LatentBridgeError(f"--threads must be at least 1, got {self.threads}")

    def threads_per_job(self) -> int:
        return self.threads or max(1, available_cores() // self.jobs)

    def environment(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(self.threads_per_job())
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        devices = cuda_devices() if self.devices is None else self.devices
        if devices:
            mine = devices[slot::self.jobs] or [devices[slot % len(devices)]]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
        return env

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop is None:
            self._stop = signal.Signals(signum).name
        else:  # a second signal: every running cell is asked to stop now (a run's second SIGINT)
            self._again = True

    def run(self, cells: Sequence[Cell]) -> dict[str, str]:
        """Run ``cells`` (in order, ``jobs`` at once); each cell's name -> its outcome. Cells never started
        because of a stop signal are left out; a cell that a stop signal ended is ``interrupted``."""
        self._stop, self._again = None, False
        outcomes: dict[str, str] = {}
        waiting = list(cells)
        running: dict[int, tuple[subprocess.Popen, Cell, Any]] = {}  # slot -> process, cell, log file
        previous = install_signal_handlers(self._on_signal, PREEMPT_SIGNALS)
        forwarded = False
        try:
            while waiting or running:
                if self._stop is not None and not forwarded:
                    self.log(f"{self._stop}: stopping {len(running)} running cell(s) (each writes a checkpoint); "
                             f"{len(waiting)} not started")
                    for process, _, _ in running.values():
                        process.send_signal(getattr(signal, self._stop))
                    waiting, forwarded = [], True
                if self._again:
                    self.log("second stop signal: the running cells stop now")
                    for process, _, _ in running.values():
                        process.send_signal(signal.SIGINT)
                    self._again = False
                for slot in [s for s in range(self.jobs) if s not in running]:
                    if not waiting:
                        break
                    cell = waiting.pop(0)
                    cell.folder.parent.mkdir(parents=True, exist_ok=True)
                    if cell.log is not None:
                        cell.log.parent.mkdir(parents=True, exist_ok=True)
                    out = open(cell.log, "a") if cell.log is not None else subprocess.DEVNULL  # noqa: SIM115
                    process = subprocess.Popen(cell.command(), stdout=out, stderr=subprocess.STDOUT,
                                               env=self.environment(slot), start_new_session=True)
                    running[slot] = (process, cell, out)
                    self.log(f"started {cell.name} (log: {cell.log})" if cell.log else f"started {cell.name}")
                for slot, (process, cell, out) in list(running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    if out is not subprocess.DEVNULL:
                        out.close()
                    del running[slot]
                    outcomes[cell.name] = outcome_of(code) if not forwarded or code in (0, EXIT_DIVERGED) \
                        else "interrupted"  # stopped by the signal it was sent (even before its handlers were in)
                    done = len(outcomes)
                    self.log(f"[{done}/{done + len(running) + len(waiting)}] {cell.name}: {outcomes[cell.name]}"
                             + (f" (exit {code})" if outcomes[cell.name] == "failed" else ""))
                if running or waiting:
                    time.sleep(self.poll_seconds)
        finally:
            for process, _, out in running.values():  # only on an error of our own: do not leave orphans
                process.terminate()
                if out is not subprocess.DEVNULL:
                    out.close()
            restore_signal_handlers(previous)
        return outcomes

    @property
    def stopped_by(self) -> str | None:
        return self._stop


# -- SLURM, through submitit ------------------------------------------------------------------------------

PREEMPT_SIGNAL = "USR1"  # what SLURM sends signal_delay_s before the time limit: latentbridge run checkpoints on it


class CellJob:
    """What one array task runs: its cell's ``latentbridge run``, as a child process. On the preemption
    signal (SLURM's, ``signal_delay_s`` before the time limit, or a preemption) submitit calls
    :meth:`checkpoint`: the child gets SIGUSR1, writes its checkpoint and exits 75, and the task requeues
    itself to resume the cell (``--resume``). Picklable; submitit is imported only where it runs."""

    def __init__(self, grace_seconds: float = 60.0):
        self.grace_seconds = grace_seconds
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"grace_seconds": self.grace_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.grace_seconds, self._process = state["grace_seconds"], None

    def __call__(self, cell: Cell) -> str:
        print(f"latentbridge sweep cell: {cell.name} ({'resuming' if cell.resume else 'new'})", flush=True)
        env = dict(os.environ)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:  # the cell's threads are the CPUs SLURM gave it
            env.update(OMP_NUM_THREADS=cpus, MKL_NUM_THREADS=cpus)
        self._process = subprocess.Popen(cell.command(), start_new_session=True, env=env)
        # poll, never a blocking wait: checkpoint() runs in a signal handler while this waits, and Popen.wait
        # holds a lock that the handler's own poll would then wait on forever
        while (code := self._process.poll()) is None:
            time.sleep(0.5)
        outcome = outcome_of(code)
        if outcome == "failed":
            raise RuntimeError(f"{cell.name}: latentbridge run exited {code}")
        return outcome

    def checkpoint(self, cell: Cell) -> Any:
        import submitit

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # the run writes its checkpoint and exits 75
            deadline = time.monotonic() + self.grace_seconds
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if process.poll() is None:
                process.kill()
        # resume what the run wrote; a run stopped before it claimed its folder starts again
        resumed = Cell(cell.name, cell.recipe, cell.overrides, cell.folder, resume=(cell.folder / "run.json").is_file(),
                       log=cell.log)
        return submitit.helpers.DelayedSubmission(self, resumed)


@dataclass
class SlurmLauncher:
    """The cells as one SLURM job array (submitit), at most ``array_parallelism`` at once; this process waits
    for them, then the sweep writes its report. ``executor: local`` runs the same array through submitit's
    local executor (processes on this machine), to rehearse a sweep without a cluster. submitit keeps each
    task's logs in ``folder``."""

    folder: Path
    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    array_parallelism: int = 16
    signal_delay_s: int = 120
    max_requeues: int = 3
    executor: str = "slurm"
    log: Callable[[str], None] = print
    poll_seconds: float = 5.0
    _stop: str | None = field(default=None, init=False)

    def check(self) -> None:
        """One line for what stands in the way: submitit missing, no ``sbatch``, a bad setting."""
        import importlib.util
        import shutil

        if importlib.util.find_spec("submitit") is None:
            raise LatentBridgeError("--launcher slurm needs submitit: pip install 'latentbridge[slurm]'")
        if self.executor not in ("slurm", "local"):
            raise LatentBridgeError(f"--slurm-executor must be 'slurm' or 'local', not {self.executor!r}")
        if self.executor == "slurm" and shutil.which("sbatch") is None:
            raise LatentBridgeError("--launcher slurm: no `sbatch` on PATH (run it on a SLURM login node, or "
                                    "--slurm-executor local to rehearse on this machine)")
        for name in ("time_min", "array_parallelism", "signal_delay_s"):
            if getattr(self, name) < 1:
                raise LatentBridgeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0 or (self.cpus_per_task is not None and self.cpus_per_task < 1) or \
                (self.mem_gb is not None and self.mem_gb <= 0) or self.max_requeues < 0:
            raise LatentBridgeError("--gpus must be >= 0, --cpus >= 1, --mem > 0 and --max-requeues >= 0")

    def _executor(self) -> Any:
        os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL)  # read when submitit is first imported
        import submitit
        from submitit.slurm.slurm import SlurmJobEnvironment

        # what sbatch is told to send (--signal) and what each task listens for (read from this environment,
        # which the tasks inherit) must be one signal, whenever submitit was first imported in this process
        os.environ["SUBMITIT_PREEMPT_SIGNAL"] = SlurmJobEnvironment.USR_SIG

        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.executor,
                                         slurm_max_num_timeout=self.max_requeues)
        params: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_node,
                                  "slurm_array_parallelism": self.array_parallelism,
                                  "slurm_signal_delay_s": self.signal_delay_s, "name": "latentbridge-sweep"}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        if self.cpus_per_task:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        executor.update_parameters(**params)
        return executor

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = signal.Signals(signum).name

    def run(self, cells: Sequence[Cell]) -> dict[str, str]:
        self.check()
        if not cells:
            return {}
        executor = self._executor()
        jobs = executor.map_array(CellJob(grace_seconds=max(1.0, self.signal_delay_s - 10.0)), list(cells))
        self.log(f"submitted {len(jobs)} cell(s) as job array {jobs[0].job_id.split('_')[0]} "
                 f"(logs in {self.folder})")
        outcomes: dict[str, str] = {}
        previous = install_signal_handlers(self._on_signal, ("SIGINT", "SIGTERM"))
        try:
            pending = dict(zip(jobs, cells, strict=True))
            while pending and self._stop is None:
                for job, cell in list(pending.items()):
                    if not job.done():
                        continue
                    del pending[job]
                    try:
                        outcomes[cell.name] = job.result()
                    except Exception as exc:  # noqa: BLE001  (the task failed: named at the end)
                        outcomes[cell.name] = "failed"
                        self.log(f"{cell.name}: failed ({str(exc).strip().splitlines()[-1] if str(exc) else exc!r}); "
                                 f"log: {job.paths.stderr}")
                    done = len(outcomes)
                    self.log(f"[{done}/{len(cells)}] {cell.name}: {outcomes[cell.name]}")
                if pending:
                    time.sleep(self.poll_seconds)
            if self._stop is not None and pending:
                ids = " ".join(job.job_id for job in pending)
                self.log(f"{self._stop}: no longer waiting; {len(pending)} cell(s) go on under SLURM ({ids}); "
                         "rerun the same command once they are done to write the report")
        finally:
            restore_signal_handlers(previous)
        return outcomes

    @property
    def stopped_by(self) -> str | None:
        return self._stop
