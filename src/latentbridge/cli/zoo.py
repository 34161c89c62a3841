"""``latentbridge zoo``: the built-in tiny model pair (list it, rebuild it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from latentbridge.cli.app import app, console
from latentbridge.errors import LatentBridgeError

zoo_app = typer.Typer(no_args_is_help=True, help="The built-in tiny model pair (tiny-llama, tiny-mistral).")
app.add_typer(zoo_app, name="zoo")

COLUMNS = ("name", "params", "tokenizer", "vocab", "hidden", "layers", "rope", "arith", "arith fresh / twin", "facts",
           "facts taught", "passages")


def zoo_rows(info: dict) -> list[dict]:
    rows = []
    for name, m in info["models"].items():
        rows.append({
            "name": name,
            "architecture": m["architecture"],
            "parameters": m["parameters"],
            "tokenizer": m["tokenizer_type"],
            "vocab_size": m["vocab_size"],
            "hidden_size": m["hidden_size"],
            "num_layers": m["num_layers"],
            "rope_theta": m["rope_theta"],
            "accuracy": m["accuracy"],
            "n_eval": m["n_eval"],
            "facts_accuracy": m.get("facts_accuracy"),
            "taught_facts_accuracy": m.get("taught_facts_accuracy"),
            "facts_taught": m.get("spec", {}).get("facts", "none"),
            "arith_by_subset": {k: v["accuracy"] for k, v in m.get("arith_by_subset", {}).items()},
            "passages": m.get("passages"),
        })
    return rows


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_zoo(rows: list[dict], title: str) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for column in COLUMNS:
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"], f"{r['parameters']:,}", escape(r["tokenizer"]),
            str(r["vocab_size"]), str(r["hidden_size"]), str(r["num_layers"]), f"{r['rope_theta']:g}",
            f"{r['accuracy']:.3f}",
            " / ".join(_accuracy(r["arith_by_subset"].get(k)) for k in ("fresh", "twin")) if r["arith_by_subset"] else "-",
            _accuracy(r["facts_accuracy"]),
            f"{_accuracy(r['taught_facts_accuracy'])} ({r['facts_taught']})",
            f"{_accuracy(r['passages']['with_context'])} / {_accuracy(r['passages']['question_only'])}"
            if r["passages"] else "-",
        )
    table.caption = (
        "tiny-llama and tiny-llama-b (its architecture and tokenizer, another seed, arith only) are LlamaForCausalLM, "
        "tiny-mistral a MistralForCausalLM (see --json)\n"
        f"tokenizer: 1-digit = every digit its own token; n-digit = numbers in multi-digit pieces\n"
        "arith fresh / twin: on its 81 test problems that no training problem equals once names are masked, and "
        "on the 119 that one does\n"
        f"accuracy: greedy, strict '#### N' match, on the {rows[0]['n_eval']} arith test problems and the facts "
        "test questions;\nfacts taught: on facts it was trained on (task: every task entity; public: the "
        "format, from other entities)\npassages: on the 200 passages test items (4 facts each) reading the context (left) "
        "and the question, and the question only (chance: 1 in 11)"
    ) if rows else None
    console.print(table)


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each built-in model: parameters, tokenizer, hidden size, layers, RoPE base, measured accuracies."""
    from latentbridge.bridge.models import zoo_dir

    path = zoo_dir() / "zoo.json"
    if not path.is_file():
        raise LatentBridgeError(f"the built-in models are missing ({path}); rebuild them with `latentbridge zoo build`")
    rows = zoo_rows(json.loads(path.read_text()))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_zoo(rows, "built-in models")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(Path("zoo-build"), "--out", help="Folder to write the pair, the data and zoo.json into."),
    seed: int = typer.Option(0, "--seed", help="Seed of data, tokenizers, initialisation and data order."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty."),
) -> None:
    """Rebuild the tiny models from scratch (data, tokenizers, training, reading stages, accuracies); up to 1 h 25 min on 2 cores."""
    from latentbridge.zoo.build import build_pair

    if out.exists() and any(out.iterdir()) and not force:
        raise LatentBridgeError(f"{out} is not empty; choose another --out or add --force")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    start = time.perf_counter()
    with progress:
        info = build_pair(out, seed=seed, progress=report)
    print_zoo(zoo_rows(info), f"built in {time.perf_counter() - start:.0f} s into {out}")
    console.print(f"use them with models.source={escape(str(out / 'tiny-llama'))} (or tiny-mistral)")
