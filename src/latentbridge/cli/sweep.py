"""``latentbridge sweep``: every combination and seed of some recipes, then the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from latentbridge.cli.app import app, console
from latentbridge.cli.ui import RunDisplay
from latentbridge.errors import LatentBridgeError


@app.command("sweep")
def sweep(
    recipes_and_overrides: list[str] = typer.Argument(
        ..., help="One or more recipes (each a configuration), then overrides key=value for every run."),
    grid: list[str] = typer.Option(None, "--grid", help="key=v1,v2,...: one axis of the grid (repeatable)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds 0..N-1 for every configuration."),
    out: Path = typer.Option(None, "--out", help="Sweep folder (default: runs/sweeps/<first recipe>)."),
    launcher: str = typer.Option("local", "--launcher", help="'local': on this machine; 'slurm': a SLURM job "
                                 "array through submitit (pip install 'latentbridge[slurm]')."),
    jobs: int = typer.Option(1, "--jobs", help="local: cells at once, each its own process (1: one after another, "
                             "in this process)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads per cell (default: the cores divided among "
                                "the jobs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and their run folders; run nothing."),
    limit: int = typer.Option(None, "--limit", help="Every evaluation on N items (eval.n=N, eval.dev_n=N)."),
    launcher_config: Path = typer.Option(None, "--launcher-config", help="A YAML file whose `launcher:` block "
                                         "sets the SLURM options below (the command line wins)."),
    partition: str = typer.Option(None, "--partition", help="slurm: partition."),
    time_min: int = typer.Option(None, "--time", help="slurm: time limit per cell, minutes (default 60)."),
    gpus: int = typer.Option(None, "--gpus", help="slurm: GPUs per cell (default 0)."),
    cpus: int = typer.Option(None, "--cpus", help="slurm: CPUs per cell."),
    mem_gb: float = typer.Option(None, "--mem", help="slurm: memory per cell, GB."),
    account: str = typer.Option(None, "--account", help="slurm: account."),
    array_parallelism: int = typer.Option(None, "--array-parallelism", help="slurm: cells running at once "
                                          "(default 16)."),
    signal_delay: int = typer.Option(None, "--signal-delay", help="slurm: seconds before the time limit that "
                                     "SIGUSR1 asks a cell for its checkpoint; it then requeues (default 120)."),
    max_requeues: int = typer.Option(None, "--max-requeues", help="slurm: requeues per cell (default 3)."),
    slurm_executor: str = typer.Option(None, "--slurm-executor", help="slurm: 'slurm', or 'local' to rehearse "
                                       "the array with submitit's local executor on this machine."),
) -> None:
    """Run every combination and seed (finished runs are skipped, unfinished ones resumed), N at once with
    --jobs N, then write a report with mean ± 95% interval over seeds and a paired test against the first.

    A cell that fails does not stop the others; they are named at the end (exit 1). SIGINT, SIGTERM or
    SIGUSR1 stops every running cell with a checkpoint (exit 75): rerun the same command to continue."""
    from latentbridge.cli.run import limit_overrides
    from latentbridge.train.launchers import LocalLauncher
    from latentbridge.train.sweep import SweepStopped, run_sweep, status_of, sweep_cells, train_one

    overrides = [a for a in recipes_and_overrides if "=" in a or a.startswith("~")]
    recipes = [a for a in recipes_and_overrides if a not in overrides]
    overrides += limit_overrides(limit)
    if not recipes:
        raise LatentBridgeError("sweep: name at least one recipe")
    if launcher not in ("local", "slurm"):
        raise LatentBridgeError(f"--launcher must be 'local' or 'slurm', not {launcher!r}")
    if jobs < 1:
        raise LatentBridgeError(f"--jobs must be at least 1, got {jobs}")
    if threads is not None and threads < 1:
        raise LatentBridgeError(f"--threads must be at least 1, got {threads}")
    out = out or Path("runs") / "sweeps" / Path(recipes[0]).stem
    if dry_run:
        from latentbridge.config.recipe import load_recipe

        cells = sweep_cells(recipes, grid or [], seeds, out, overrides)
        for cell in cells:  # every recipe and override checked, as a real sweep does first
            load_recipe(cell.recipe, [o for o in cell.overrides if not o.startswith("run_dir=")])
        for i, cell in enumerate(cells, start=1):
            state = status_of(cell.folder)
            what = "finished: skipped" if state == "finished" else f"{state}: resumes" if state else "new"
            console.print(f"[{i}/{len(cells)}] {escape(cell.name)}  {escape(str(cell.folder))}  ({what})")
        console.print(f"{len(cells)} cells; the report goes to {escape(str(out / 'report'))}")
        return
    chosen = None
    given = {"partition": partition, "time_min": time_min, "gpus_per_node": gpus, "cpus_per_task": cpus,
             "mem_gb": mem_gb, "account": account, "array_parallelism": array_parallelism,
             "signal_delay_s": signal_delay, "max_requeues": max_requeues, "executor": slurm_executor}
    if launcher == "slurm":
        chosen = slurm_launcher(out, launcher_config, given)
        chosen.log = console.print
        chosen.check()
    elif any(v is not None for v in given.values()) or launcher_config is not None:
        raise LatentBridgeError("--partition, --time, --gpus, --cpus, --mem, --account, --array-parallelism, "
                                "--signal-delay, --max-requeues, --slurm-executor and --launcher-config go with "
                                "--launcher slurm")
    elif jobs > 1:
        chosen = LocalLauncher(jobs, threads, log=console.print)
    elif threads is not None:
        import torch

        torch.set_num_threads(threads)

    def run_one(recipe: str, run_overrides: list[str], folder: Path, resume: bool) -> None:
        with RunDisplay(console) as display:
            train_one(recipe, run_overrides, folder, resume, consumers=[display], log=display.log)

    outcomes: dict[str, str] = {}
    try:
        path, _ = run_sweep(recipes, grid or [], seeds, out, overrides, run_one, log=console.print, launcher=chosen,
                            outcomes=outcomes)
    except SweepStopped as stop:
        console.print(str(stop))
        raise typer.Exit(75) from None
    console.print(f"report written to {escape(str(path))}")
    failed = [name for name, outcome in outcomes.items() if outcome == "failed"]
    if failed:
        console.print(f"{len(failed)} cell(s) failed (logs in {escape(str(out / 'logs'))}): "
                      + "; ".join(escape(n) for n in failed))
        raise typer.Exit(1)


# the `launcher:` block's keys: the command line's option names (without --) or the launcher's own
_BLOCK_KEYS = {"partition": "partition", "time": "time_min", "time_min": "time_min", "gpus": "gpus_per_node",
               "gpus_per_node": "gpus_per_node", "cpus": "cpus_per_task", "cpus_per_task": "cpus_per_task",
               "mem": "mem_gb", "mem_gb": "mem_gb", "account": "account", "array_parallelism": "array_parallelism",
               "signal_delay": "signal_delay_s", "signal_delay_s": "signal_delay_s", "max_requeues": "max_requeues",
               "executor": "executor", "slurm_executor": "executor"}


def slurm_launcher(out: Path, config: Path | None, given: dict) -> object:
    """The SLURM launcher from a ``launcher:`` block (``config``) and the command line (which wins)."""
    import yaml

    from latentbridge.config.schema import did_you_mean
    from latentbridge.train.launchers import SlurmLauncher

    settings: dict = {}
    if config is not None:
        try:
            data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LatentBridgeError(f"--launcher-config {config}: {str(exc).splitlines()[0]}") from None
        block = data.get("launcher") if isinstance(data, dict) else None
        if not isinstance(block, dict):
            raise LatentBridgeError(f"--launcher-config {config}: expected a mapping under `launcher:`")
        for key, value in block.items():
            key = str(key).replace("-", "_")
            if key not in _BLOCK_KEYS:
                raise LatentBridgeError(f"--launcher-config {config}: launcher.{key}: unknown setting"
                                        f"{did_you_mean(key, list(_BLOCK_KEYS))}")
            settings[_BLOCK_KEYS[key]] = value
    settings.update({k: v for k, v in given.items() if v is not None})
    types = {"time_min": int, "gpus_per_node": int, "cpus_per_task": int, "array_parallelism": int,
             "signal_delay_s": int, "max_requeues": int, "mem_gb": float}
    for key, kind in types.items():
        if key in settings and not (isinstance(settings[key], (int, float)) and not isinstance(settings[key], bool)):
            raise LatentBridgeError(f"launcher.{key}: expected a number, got {settings[key]!r}")
        if key in settings:
            settings[key] = kind(settings[key])
    return SlurmLauncher(folder=out / "slurm", **settings)
