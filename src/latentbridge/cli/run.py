"""Commands that train and evaluate: run, eval, summarize."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from latentbridge.cli.app import OVERRIDES_HELP, app, console
from latentbridge.cli.ui import RunUI, print_results
from latentbridge.errors import LatentBridgeError

EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (with --resume)


def _resume_dir(name: str, given: str | None) -> Path:
    """The run folder to resume: the recipe's run_dir, else the newest unfinished run of this recipe in runs/."""
    if given:
        return Path(given)
    candidates = sorted(Path("runs").glob(f"{name}-*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for info in candidates:
        if json.loads(info.read_text()).get("status") != "finished":
            return info.parent
    if candidates:
        raise LatentBridgeError(f"nothing to resume: the runs of '{name}' in runs/ are finished; give run_dir=...")
    raise LatentBridgeError(f"nothing to resume: no run of '{name}' in runs/; give run_dir=...")


@app.command("run")
def run(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the newest complete checkpoint (same as resume=true)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine: relaunches itself under torchrun."),
) -> None:
    """Train a translator as the recipe says, evaluating as it goes; ends with a results table.

    Exit codes: 0 finished, 2 a problem with the input, 3 stopped (non-finite losses),
    75 preempted by SIGTERM/SIGINT/SIGUSR1 (a checkpoint was written: rerun with --resume).
    """
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe
    from latentbridge.train.distributed import init_from_env, is_main, launched_by_torchrun
    from latentbridge.train.runner import Runner, default_run_dir
    from latentbridge.train.state import Diverged, Preempted

    overrides = list(overrides or [])
    resolved = load_recipe(recipe, overrides)
    resume = resume or resolved.resume
    if resume:
        run_dir = _resume_dir(resolved.name, resolved.run_dir)
        if not (run_dir / "run.json").is_file():
            raise LatentBridgeError(f"{run_dir} holds no run to resume")
    else:
        run_dir = default_run_dir(resolved)
        if (run_dir / "run.json").exists():
            raise LatentBridgeError(f"{run_dir} already holds a run; add --resume to continue it, or choose another run_dir")
    if nproc > 1 and not launched_by_torchrun():  # every process must write to the folder chosen here
        relaunch_under_torchrun(nproc, ["run", recipe, *overrides, f"run_dir={run_dir}", *(["--resume"] if resume else [])])
    init_from_env()
    out = console if is_main() else Console(quiet=True)
    out.print(f"{'resuming' if resume else 'run folder'}: [bold]{escape(str(run_dir))}[/]")
    with RunUI(out) as ui:
        experiment = Experiment.build(resolved, log=ui.log)
        runner = Runner(experiment, run_dir, ui=ui)
        try:
            state = runner.run(resume=resume)
        except Preempted as stop:
            ui.log(f"{stop.signal_name}: stopped after step {stop.step}; checkpoint written")
            ui.log(f"continue with: latentbridge run {recipe} run_dir={run_dir} --resume")
            raise typer.Exit(EXIT_PREEMPTED) from None
        except Diverged as stop:
            last = f"step {stop.last_checkpoint}" if stop.last_checkpoint is not None else "none yet"
            ui.log(f"stopped at step {stop.step}: {stop.count} non-finite losses in a row "
                   f"(each was skipped); last good checkpoint: {last}")
            raise typer.Exit(EXIT_DIVERGED) from None
    final = state.evaluations[-1]
    print_results(out, final, f"{resolved.name}: final evaluation (step {final['step']})")
    if state.best_step is not None:
        out.print(f"best bridged accuracy {state.best_accuracy:.3f} at step {state.best_step} (saved in best/)")
    out.print(f"results in {escape(str(run_dir))}")


def relaunch_under_torchrun(nproc: int, args: list[str]) -> None:
    """Replace this process with ``torchrun --standalone --nproc_per_node N -m latentbridge ARGS``."""
    import os
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "latentbridge", *args]
    os.execv(sys.executable, command)


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `latentbridge run`."),
    step: str = typer.Option("best", "--step", help="Which translator: 'best' or 'final'."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides for the evaluation, e.g. eval.n=50."),
) -> None:
    """Re-evaluate a saved translator; writes eval_<step>/ inside the run folder."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe
    from latentbridge.eval.harness import EvalSettings, Evaluator
    from latentbridge.io.weights import read_translator_meta
    from latentbridge.train.distributed import init_from_env, is_main

    if step not in ("best", "final"):
        raise LatentBridgeError(f"--step must be 'best' or 'final', got '{step}'")
    if not (run_dir / "recipe.yaml").is_file():
        raise LatentBridgeError(f"{run_dir} is not a run folder (no recipe.yaml)")
    weights = run_dir / "best" if step == "best" else run_dir
    meta = read_translator_meta(weights)
    recipe = load_recipe(run_dir / "recipe.yaml", overrides or [])
    out_dir = run_dir / f"eval_{step}"
    init_from_env()
    out = console if is_main() else Console(quiet=True)
    with RunUI(out) as ui:
        experiment = Experiment.build(recipe, log=ui.log, translator_dir=str(weights))
        e = recipe.eval
        evaluator = Evaluator(
            experiment.bridge, experiment.task,
            EvalSettings(n=e.n, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, stop=list(e.stop),
                         systems=list(e.systems)),
            out_dir, progress=ui.eval_progress, autocast=recipe.models.autocast,
        )
        result = evaluator.evaluate(int(meta.get("step", 0)))
    if is_main():
        (out_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print_results(out, result, f"{recipe.name}: {step} translator (step {result['step']})")
    out.print(f"records in {escape(str(out_dir))}")


@app.command("summarize")
def summarize(
    paths: list[Path] = typer.Argument(..., help="eval_samples_step_<N>.jsonl files or run folders."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Per-evaluation tables: accuracy with intervals, invalid/gold-match counts, collapse and echo."""
    from latentbridge.eval.summary import eval_files, read_records, summarize_records

    rows = []
    for step, file in eval_files(paths):
        summary = summarize_records(read_records(file))
        rows.append({"file": str(file), "step": step, **summary})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        print_results(console, row, f"{row['file']} (step {row['step']}, {row['n_items']} items)")
