"""Rich output for long work: the training progress bar with live loss terms, and result tables."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from latentbridge.eval.systems import SYSTEMS


def fmt_acc(s: dict[str, Any] | None) -> str:
    """``0.412 [0.345, 0.482]``: accuracy and its Wilson 95% interval."""
    if s is None:
        return "-"
    low, high = s["ci95"]
    return f"{s['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def shorten(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def results_table(summary: dict[str, Any], title: str) -> Table:
    """Accuracy with 95% interval and the diagnostics of each system at one evaluation."""
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for column in ("system", "accuracy [95% CI]", "correct", "invalid", "distinct", "top", "collapse", "echo"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("system", "accuracy [95% CI]") else "right")
    for system in SYSTEMS:
        s = summary["systems"].get(system)
        if s is None:
            table.add_row(system, "not run", *["-"] * 6)
            continue
        table.add_row(
            system, fmt_acc(s), f"{s['correct']}/{s['n']}", str(s["invalid"]), str(s["distinct"]),
            f"{s['top_share']:.2f}", "YES" if s["collapsed"] else "no", f"{s['echo_rate']:.2f}",
        )
    paired = summary.get("mcnemar_bridged_vs_target")
    table.caption = "top: share of the most common answer; collapse: top >= 0.5; echo: outputs restating the question"
    if paired:
        table.caption += "\n" + (
            f"bridged vs target, paired exact McNemar: {paired['bridged_only']} vs {paired['target_only']} "
            f"discordant items, p = {paired['p_value']:.3g}"
        )
    return table


def sample_lines(summary: dict[str, Any], width: int = 100) -> list[str]:
    """One sample output per system that ran (the first item's)."""
    return [
        f"  {system:>7}: {shorten(s['sample'], width)}"
        for system in SYSTEMS
        if (s := summary["systems"].get(system)) is not None
    ]


def print_results(console: Console, summary: dict[str, Any], title: str) -> None:
    console.print(results_table(summary, title))
    console.print("sample outputs (first item):", highlight=False)
    for line in sample_lines(summary):
        console.print(escape(line), highlight=False)


class RunUI:
    """A progress bar for training steps (live loss terms) and for evaluation batches."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._train = None
        self._eval = None

    def __enter__(self) -> RunUI:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(escape(message), highlight=False)

    def start_training(self, total: int, done: int = 0) -> None:
        self._train = self.progress.add_task("train", total=total, completed=done, info="")

    def training_step(self, step: int, record: dict[str, Any]) -> None:
        terms = " ".join(
            f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss/") and v is not None
        )
        self.progress.update(self._train, completed=step, info=f"loss={record['loss']:.4f} {terms}")

    def eval_progress(self, what: str, done: int) -> None:
        if self._eval is None:
            self._eval = self.progress.add_task("eval", total=None, info="")
        self.progress.update(self._eval, advance=done, info=what)

    def evaluation(self, result: dict[str, Any]) -> None:
        if self._eval is not None:
            self.progress.remove_task(self._eval)
            self._eval = None
        parts = [f"{s} {fmt_acc(result['systems'][s])}" for s in SYSTEMS if result["systems"].get(s)]
        self.log(f"step {result['step']}: " + " | ".join(parts))
