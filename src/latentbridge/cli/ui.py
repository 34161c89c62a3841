"""Rich output for long work: the training progress bar with live loss terms, and result tables."""

from __future__ import annotations

import time
from collections.abc import Sequence
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

from latentbridge.api import events


def fmt_acc(s: dict[str, Any] | None) -> str:
    """``0.412 [0.345, 0.482]``: accuracy and its Wilson 95% interval."""
    return "-" if s is None else _with_interval(s["accuracy"], s["ci95"])


def _with_interval(accuracy: float, ci95: Sequence[float]) -> str:
    low, high = ci95
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]"


def shorten(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def fmt_filter(s: dict[str, Any] | None, name: str) -> str:
    """``0.412 [0.345, 0.482]`` under answer filter ``name`` (its accuracy and Wilson 95% interval)."""
    if s is None or name not in s.get("by_filter", {}) or name not in s.get("ci95_by_filter", {}):
        return "-"
    return _with_interval(s["by_filter"][name], s["ci95_by_filter"][name])


def is_choice_summary(summary: dict[str, Any]) -> bool:
    return any(s is not None and "gold_nll" in s for s in summary["systems"].values())


def choice_table(summary: dict[str, Any], title: str) -> Table:
    """A multiple-choice evaluation: ``acc`` and ``acc_norm`` (log-likelihood of each choice) and the
    choice the greedy output names, each with its Wilson 95% interval, and the gold choice's mean NLL."""
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for column in ("system", "acc [95% CI]", "acc_norm [95% CI]", "generated [95% CI]", "no choice", "gold NLL", "top"):
        table.add_column(column, no_wrap=True, justify="left" if column == "system" or "CI" in column else "right")
    for system, s in summary["systems"].items():
        if s is None:
            table.add_row(system, "not run", *["-"] * 5)
            continue
        table.add_row(system, fmt_acc(s), fmt_filter(s, "acc_norm"), fmt_filter(s, "generate"),
                      str(s.get("generate_invalid", "-")), f"{s['gold_nll']:.3f}", f"{s['top_share']:.2f}")
    table.caption = ("acc / acc_norm: the choice of highest log-likelihood (per character for acc_norm) after what the "
                     "system reads; generated: the choice its greedy output names; top: share of the most common choice")
    _paired_caption(table, summary)
    return table


def results_table(summary: dict[str, Any], title: str) -> Table:
    """Accuracy with 95% interval and the diagnostics of each system at one evaluation."""
    if is_choice_summary(summary):
        return choice_table(summary, title)
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for column in ("system", "accuracy [95% CI]", "correct", "invalid", "distinct", "top", "collapse", "echo"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("system", "accuracy [95% CI]") else "right")
    for system, s in summary["systems"].items():
        if s is None:
            table.add_row(system, "not run", *["-"] * 6)
            continue
        table.add_row(
            system, fmt_acc(s), f"{s['correct']}/{s['n']}", str(s["invalid"]), str(s["distinct"]),
            f"{s['top_share']:.2f}", "YES" if s["collapsed"] else "no", f"{s['echo_rate']:.2f}",
        )
    table.caption = "top: share of the most common answer; collapse: top >= 0.5; echo: outputs restating the question"
    _paired_caption(table, summary)
    return table


def _paired_caption(table: Table, summary: dict[str, Any]) -> None:
    """The paired tests (bridged vs target, the information flow) and the message sizes, under the table."""
    paired = summary.get("mcnemar_bridged_vs_target")
    if paired:
        table.caption += "\n" + (
            f"bridged vs target, paired exact McNemar: {paired['bridged_only']} vs {paired['target_only']} "
            f"discordant items, p = {paired['p_value']:.3g}"
        )
    flow = summary.get("information_flow")
    if flow:
        table.caption += "\n" + information_flow_line(flow)
    others = {c: f for c, f in (summary.get("information_flow_by_control") or {}).items() if c != "shuffled"}
    if others:
        table.caption += "\nagainst the other controls: " + " | ".join(
            f"bridged − {c} = {f['difference']:+.3f} (p = {f['p_value']:.3g}){' NO INFORMATION' if f['no_information'] else ''}"
            for c, f in others.items())
    subsets = sorted({n for s in summary["systems"].values() if s for n in s.get("by_subset", {})})
    for name in subsets:
        per = [f"{system} {s['by_subset'][name]['accuracy']:.3f}" for system, s in summary["systems"].items()
               if s and name in s.get("by_subset", {})]
        n = next(s["by_subset"][name]["n"] for s in summary["systems"].values() if s and name in s.get("by_subset", {}))
        table.caption += f"\nsubset {name} ({n} items): " + " | ".join(per)
    sizes = [f"{name} {s['message_bytes']:,.0f} bytes ({s['message_tokens']:.1f} positions)"
             for name, s in summary["systems"].items() if s and "message_bytes" in s]
    if sizes:
        table.caption += "\nmessage per item: " + " | ".join(sizes)


def information_flow_line(flow: dict[str, Any]) -> str:
    """``information flow: bridged − shuffled = +0.045 (12 vs 3 items, p = 0.035)``, flagged when not positive."""
    line = (f"information flow: bridged − shuffled = {flow['difference']:+.3f} "
            f"({flow['bridged_only']} vs {flow['shuffled_only']} discordant items, p = {flow['p_value']:.3g})")
    return line + (" — NO INFORMATION FROM THE SOURCE" if flow["no_information"] else "")


def sample_lines(summary: dict[str, Any], width: int = 100) -> list[str]:
    """One sample output per system that ran (the first item's)."""
    return [
        f"  {system:>{max(8, *map(len, summary['systems']))}}: {shorten(s['sample'], width)}"
        for system, s in summary["systems"].items()
        if s is not None
    ]


def print_results(console: Console, summary: dict[str, Any], title: str) -> None:
    console.print(results_table(summary, title))
    console.print("sample outputs (first item):", highlight=False)
    for line in sample_lines(summary):
        console.print(escape(line), highlight=False)


def loss_terms(record: dict[str, Any]) -> str:
    return " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss/") and v is not None)


def accuracy_line(step: int, split: str, summary: dict[str, Any]) -> str:
    parts = [f"{name} {fmt_acc(s)}" for name, s in summary["systems"].items() if s]
    return f"step {step} ({split}): " + " | ".join(parts)


class RunDisplay:
    """The console as a consumer of run events: a live progress display on a terminal, plain lines
    otherwise (a SLURM log, ``> out.txt``). Use as a context manager; :meth:`log` prints a line."""

    name = "console"

    def __init__(self, console: Console, live: bool | None = None):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        ) if self.live else None
        self._train = None
        self._eval: tuple[str, Any] | None = None  # (system, progress task)
        self._eval_done: dict[str, int] = {}
        self._started = time.perf_counter()

    def __enter__(self) -> RunDisplay:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(escape(message), highlight=False)

    def on_run_event(self, event: Any) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_RunStarted(self, event: events.RunStarted) -> None:
        resumed = event.resumed_from is not None
        self.console.print(f"{'resuming' if resumed else 'run folder'}: [bold]{escape(str(event.run_dir))}[/]")
        if self.progress is not None:
            self._train = self.progress.add_task("train", total=event.total_steps,
                                                 completed=event.resumed_from or 0, info="")

    def _on_StepEnded(self, event: events.StepEnded) -> None:
        info = f"loss={event.record['loss']:.4f} {loss_terms(event.record)}"
        if self.progress is not None:
            self.progress.update(self._train, completed=event.step, info=info)
        elif event.window is not None:  # plain lines: one per logging window
            speed = f", {event.speed['examples_per_s']:.0f} examples/s" if event.speed else ""
            elapsed = time.perf_counter() - self._started
            self.log(f"step {event.step}/{event.total_steps} {info.strip()}{speed} ({elapsed:.0f} s)")

    def _on_EvaluationProgress(self, event: events.EvaluationProgress) -> None:
        done = self._eval_done.get(event.what, 0) + event.done
        self._eval_done[event.what] = done
        if self.progress is None:
            if done >= event.total:
                self.log(f"step {event.step}: evaluated {event.what} on {event.total} items")
            return
        if self._eval is None or self._eval[0] != event.what:
            if self._eval is not None:
                self.progress.remove_task(self._eval[1])
            self._eval = (event.what, self.progress.add_task(f"eval {event.what}", total=event.total, info=""))
        self.progress.update(self._eval[1], completed=min(done, event.total))

    def _on_EvaluationEnded(self, event: events.EvaluationEnded) -> None:
        if self._eval is not None and self.progress is not None:
            self.progress.remove_task(self._eval[1])
        self._eval, self._eval_done = None, {}
        self.log(accuracy_line(event.step, event.split, event.summary))

    def _on_Message(self, event: events.Message) -> None:
        self.log(event.text)
