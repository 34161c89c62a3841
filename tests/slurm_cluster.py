"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from the distribution's packages
(Debian: ``apt-get install slurmctld slurmd munge``; ``.ci/run`` installs them where it can), started in a
temporary folder with their own key, socket, ports and state, and stopped afterwards. Tests that need it
are skipped where the packages are missing or the tests do not run as root (the daemons run as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel", "scontrol")


def missing() -> str | None:
    """Why a local cluster cannot start here, or None."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing): apt-get install slurmctld slurmd munge"
    if os.geteuid() != 0:
        return "the local SLURM daemons run as root; these tests do not"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def diagnosis(env: dict[str, str], lines: int = 40) -> str:
    """What the cluster says of its jobs and node, and the tails of its daemons' logs: for a failing test's
    message, so that a run elsewhere (CI) says why a job did not run."""
    parts = []
    for command in (["squeue", "-h", "-o", "%A %T %r %S"], ["sinfo", "-h", "-o", "%t %E"], ["scontrol", "show", "job"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        parts.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    logs = Path(env["SLURM_CONF"]).parent / "log"
    for name in ("slurmctld.log", "slurmd.log"):
        path = logs / name
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else ["(none)"]
        parts.append(f"--- {name}\n" + "\n".join(tail))
    return "\n".join(parts)


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@contextlib.contextmanager
def local_slurm(folder: Path) -> Iterator[dict[str, str]]:
    """Start a cluster in ``folder``; yields the environment that reaches it (``SLURM_CONF``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = folder / "munge.sock"
    subprocess.run([_binary("munged"), "--force", f"--socket={sock}", f"--key-file={key}",
                    f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'log' / 'munged.log'}",
                    f"--seed-file={folder / 'munged.seed'}"], check=True, capture_output=True)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=latentbridge-test", f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/builtin",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", "",
    ]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [subprocess.Popen([_binary(name), "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for name in ("slurmctld", "slurmd")]
    try:
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip() == "idle":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local SLURM cluster did not come up: {state.stdout} {state.stderr}")
            time.sleep(0.5)
        yield env
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=10)
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=15)
            if daemon.poll() is None:
                daemon.kill()
        subprocess.run([_binary("munged"), f"--socket={sock}", "--stop"], capture_output=True)
