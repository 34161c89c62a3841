"""Commands that train and evaluate: run, eval, summarize."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from latentbridge.api import events
from latentbridge.cli.app import OVERRIDES_HELP, app, console
from latentbridge.cli.ui import RunDisplay, fmt_acc, print_results
from latentbridge.errors import LatentBridgeError

EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (with --resume)


@app.command("run")
def run(
    recipe: str = typer.Argument(..., help="A recipe file or the name of a shipped recipe."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the newest complete checkpoint (same as resume=true)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine: relaunches itself under torchrun."),
    nnodes: int = typer.Option(1, "--nnodes", help="Machines taking part (each runs this command with its "
                               "--node-rank); needs run_dir= and --master-addr."),
    node_rank: int = typer.Option(0, "--node-rank", help="This machine's rank, 0..nnodes-1."),
    master_addr: str = typer.Option(None, "--master-addr", help="Address of the machine of --node-rank 0."),
    master_port: int = typer.Option(29500, "--master-port", help="A free port on that machine."),
    force: bool = typer.Option(False, "--force", help="Write a new run into a run_dir that holds other files."),
    limit: int = typer.Option(None, "--limit", help="Evaluate N items of dev and test only (eval.n=N, "
                              "eval.dev_n=N): a smoke run, as lm-eval's --limit."),
) -> None:
    """Train a translator as the recipe says, evaluating as it goes; ends with a results table.

    Exit codes: 0 finished, 2 a problem with the input, 3 stopped (non-finite losses),
    75 preempted by SIGTERM/SIGINT/SIGUSR1 (a checkpoint was written: rerun with --resume).
    """
    from latentbridge.config.recipe import load_recipe
    from latentbridge.runtime.distributed import init_from_env, is_main, launched_by_torchrun, shutdown
    from latentbridge.train.jobs import choose_run_dir, train_recipe
    from latentbridge.train.state import Diverged, Preempted

    overrides = list(overrides or []) + limit_overrides(limit)
    nodes = check_nodes(nnodes, node_rank, master_addr, master_port)
    resolved = load_recipe(recipe, overrides)
    if nnodes > 1 and not resolved.run_dir:
        raise LatentBridgeError("--nnodes: every machine must write to the same folder: give run_dir=... (on a "
                                "file system they share)")
    resume = resume or resolved.resume
    run_dir = choose_run_dir(resolved, resume, force)
    if (nproc > 1 or nnodes > 1) and not launched_by_torchrun():  # every process writes to the folder chosen here
        relaunch_under_torchrun(nproc, ["run", recipe, *overrides, f"run_dir={run_dir}", *(["--resume"] if resume else []),
                                        *(["--force"] if force else [])], nodes)
    init_from_env()
    out = console if is_main() else Console(quiet=True)
    resolved.run_dir = str(run_dir)
    with RunDisplay(out) as display:
        try:
            result = train_recipe(resolved, resume=resume, consumers=[display], log=display.log, force=force)
        except Preempted as stop:
            display.log(f"{stop.signal_name}: {stop.detail or f'stopped after step {stop.step}; checkpoint written'}")
            # the run's own resolved recipe: every override it was started with is in it
            display.log(f"continue with: latentbridge run {run_dir / 'recipe.yaml'} run_dir={run_dir} --resume")
            raise typer.Exit(EXIT_PREEMPTED) from None
        except Diverged as stop:
            last = f"step {stop.last_checkpoint}" if stop.last_checkpoint is not None else "none yet"
            display.log(f"stopped at step {stop.step}: {stop.count} non-finite losses in a row "
                        f"(each was skipped); last good checkpoint: {last}")
            raise typer.Exit(EXIT_DIVERGED) from None
    state, final, best = result.state, result.final, result.best
    print_results(out, final, f"{resolved.name}: test, final weights (step {final['step']})")
    if best is not None:
        chosen = best["systems"]["bridged"]
        out.print(f"best on dev: step {state.best_step} (bridged {state.best_accuracy:.3f} on dev, saved in best/); "
                  f"its test accuracy: bridged {fmt_acc(chosen)}")
    out.print(f"results in {escape(str(run_dir))}")
    shutdown()


def limit_overrides(limit: int | None) -> list[str]:
    """``--limit N``: every evaluation on N items (the overrides ``eval.n=N eval.dev_n=N``)."""
    if limit is None:
        return []
    if limit < 1:
        raise LatentBridgeError(f"--limit must be at least 1, got {limit}")
    return [f"eval.n={limit}", f"eval.dev_n={limit}"]


def check_nodes(nnodes: int, node_rank: int, master_addr: str | None, master_port: int) -> list[str]:
    """torchrun's arguments for ``--nnodes`` machines (static rendezvous at ``master_addr:master_port``);
    ``--standalone`` for one."""
    if nnodes < 1:
        raise LatentBridgeError(f"--nnodes must be at least 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise LatentBridgeError(f"--node-rank {node_rank} is out of range for --nnodes {nnodes} (0..{nnodes - 1})")
    if not 0 < master_port < 65536:
        raise LatentBridgeError(f"--master-port must be a port number (1..65535), got {master_port}")
    if nnodes == 1:
        return ["--standalone"]
    if not master_addr:
        raise LatentBridgeError("--nnodes: give --master-addr, the address of the machine of --node-rank 0")
    return [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
            f"--master_port={master_port}"]


def relaunch_under_torchrun(nproc: int, args: list[str], nodes: list[str] | None = None) -> None:
    """Replace this process with ``torchrun NODES --nproc_per_node N -m latentbridge ARGS`` (``NODES``:
    ``--standalone``, or a static rendezvous of several machines from :func:`check_nodes`)."""
    import os
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", *(nodes or ["--standalone"]),
               f"--nproc_per_node={nproc}", "-m", "latentbridge", *args]
    os.execv(sys.executable, command)


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `latentbridge run`."),
    step: str = typer.Option("best", "--step", help="Which translator: 'best' (chosen on dev) or 'final'."),
    split: str = typer.Option("test", "--split", help="Which items: 'test' or 'dev'."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides for the evaluation, e.g. eval.n=50."),
    limit: int = typer.Option(None, "--limit", help="Evaluate N items only (eval.n=N, eval.dev_n=N)."),
) -> None:
    """Re-evaluate a saved translator; writes eval_<step>/ inside the run folder."""
    from latentbridge.eval.jobs import evaluate_run
    from latentbridge.runtime.distributed import init_from_env, is_main, shutdown

    init_from_env()
    out = console if is_main() else Console(quiet=True)
    with RunDisplay(out) as display:
        def progress(what: str, done: int, total: int) -> None:
            display.on_run_event(events.EvaluationProgress(0, what, done, total))

        result = evaluate_run(run_dir, step, [*(overrides or []), *limit_overrides(limit)], split=split,
                              progress=progress, log=display.log)
    print_results(out, result, f"{run_dir}: {step} translator (step {result['step']}) on {split}")
    out.print(f"records in {escape(str(run_dir / f'eval_{step}'))}")
    shutdown()


@app.command("summarize")
def summarize(
    paths: list[Path] = typer.Argument(..., help="eval_samples_step_<N>.jsonl files or run folders."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Per-evaluation tables: accuracy with intervals, invalid/gold-match counts, collapse and echo."""
    from latentbridge.eval.jobs import summarize_evals

    rows = summarize_evals(paths)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        print_results(console, row, f"{row['file']} (step {row['step']}, {row['n_items']} items)")


@app.command("generate")
def generate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `latentbridge run`."),
    questions: list[str] = typer.Argument(..., help="Questions; '-' reads one per line from stdin."),
    system: str = typer.Option("bridged", "--system", help="Which system answers: bridged, target, source, "
                               "relay, a control, or any registered system."),
    step: str = typer.Option("best", "--step", help="best (chosen on dev) or final weights."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per question: question, system, output."),
) -> None:
    """Ask a trained bridge: each question's greedy answer, decoded as the run's evaluation decodes."""
    import sys

    from latentbridge.eval.loaded import load_bridge
    from latentbridge.registry.host import get_registry

    known = get_registry().names("system")
    if system not in known:  # before the models load
        raise LatentBridgeError(f"--system {system!r}: unknown; known: {', '.join(known)}")
    asked: list[str] = []
    for q in questions:
        if q == "-":
            asked += [line.rstrip("\n") for line in sys.stdin if line.strip()]
        else:
            asked.append(q)
    if not asked:
        raise LatentBridgeError("generate: no question given (stdin held none)")
    bridge = load_bridge(run_dir, step=step)
    outputs = bridge.generate(asked, system=system)
    for i, (q, out) in enumerate(zip(asked, outputs, strict=True)):
        if as_json:
            typer.echo(json.dumps({"question": q, "system": system, "output": out}))
        else:
            if len(asked) > 1:
                typer.echo(("\n" if i else "") + f"# {q}")
            typer.echo(out.strip())
