"""The field's table on the tiny models: every system and channel, with controls, bytes and latency.

Reads the kept runs under ``results/runs/field/`` (one folder per run: ``run.json``, ``recipe.yaml``,
``summary.json`` and the test evaluation files) and the latency measurement ``results/field_latency.json``,
and writes ``results/field_table.md`` and ``.json``. Per task, the rows are the systems that read nothing
trained (target, source, skyline, relay, two_stage: the same in every run of one pair and task, read from
the first), then each run's channel (its ``bridged`` system, named by its recipe). Columns: test accuracy
of the weights chosen on dev with its Wilson 95% interval over the items (one run per channel: the training-free
channels are deterministic), on arith also apart on its fresh and twin items, each control's accuracy, the message's bytes per item, and latency per query
against ``two_stage`` at batch 1 and 16.

    python benchmarks/field_table.py            # write the table
    python benchmarks/field_table.py check      # regenerate and compare byte for byte (exit 1 on a change)
    python benchmarks/field_table.py pack RUN_DIR...   # keep runs (their small files) under results/runs/field/

Every kept run must pass the provenance check (made from a clean, committed tree that holds its recipe).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from common import RESULTS, pack_runs, write_or_check

from latentbridge.registry.host import Registry
from latentbridge.report.provenance import provenance_problems

RUNS = RESULTS / "runs" / "field"
BASELINES = ("target", "source", "skyline", "relay", "two_stage")
CONTROLS = ("shuffled", "null", "covgauss", "randomrot")
REPO = Path(__file__).resolve().parents[1]


def _acc(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    low, high = s["ci95"]
    return f"{s['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def _bytes(s: dict[str, Any] | None) -> str:
    return "-" if not s or s.get("message_bytes") is None else f"{s['message_bytes']:,.0f}"


def read_runs() -> list[dict[str, Any]]:
    runs = []
    for folder in sorted(p for p in RUNS.iterdir() if p.is_dir()):
        problems = provenance_problems(folder, REPO)
        if problems:
            raise SystemExit(f"{folder.name}: not publishable: {'; '.join(problems)}")
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        final = summary["test"]["final"]
        best = summary["test"].get("best") or final  # the weights chosen on dev (the final ones when they are)
        name = (f"eval_samples_test_step_{final['step']}.jsonl" if best["step"] == final["step"]
                else f"eval_samples_test_best_step_{best['step']}.jsonl")
        records = [json.loads(x) for x in (folder / name).read_text().splitlines()]
        runs.append({"run": folder.name, "recipe": recipe, "test": best, "records": records})
    return runs


def subset_accuracies(records: list[dict[str, Any]], system: str, subsets: dict[str, str]) -> str:
    """``fresh / twin`` accuracy of ``system`` (arith: its items apart from those equal to a training item
    once names are masked); ``-`` for a task without subsets or a system that did not run."""
    if not subsets or records[0].get(f"{system}_correct") is None:
        return "-"
    parts = []
    for name in ("fresh", "twin"):
        mine = [r for r in records if subsets[r["id"]] == name]
        parts.append(f"{sum(r[f'{system}_correct'] for r in mine) / len(mine):.3f}")
    return " / ".join(parts)


def task_subsets(recipe: dict[str, Any]) -> dict[str, str]:
    """The task's item subsets on test, rebuilt from the recipe's task settings (arith: fresh and twin)."""
    registry = Registry.load(autoload=False)
    settings = {k: v for k, v in recipe["task"].items() if k != "name"}
    task = registry.get("task", recipe["task"]["name"]).cls(registry.config_for("task", recipe["task"]["name"], settings))
    task.dev_size = recipe["eval"]["dev_n"]
    return task.subsets("test")


def latency_of(task: str) -> dict[str, Any]:
    """``results/field_latency_<task>.json`` (``benchmarks/latency.py --name field_latency_<task>``), its
    rows by system: the text systems by name, each channel by its recipe's name."""
    path = RESULTS / f"field_latency_{task}.json"
    if not path.is_file():
        return {"systems": {}, "batch": 16}
    data = json.loads(path.read_text())
    names = {"target alone": "target", "text relay": "relay"}
    rows = {}
    for label, row in data["systems"].items():
        name = label.split(": ", 1)[1].split(" (")[0] if label.startswith("bridged: ") else names.get(label, label)
        rows[name] = row
    return {**data, "systems": rows}


def build() -> tuple[dict[str, Any], list[str]]:
    runs = read_runs()
    out: dict[str, Any] = {"tasks": {}}
    lines = ["# The field's table on the tiny models", "",
             "Test accuracy of the weights chosen on dev (a training-free channel: its only weights) on 200 items with its Wilson 95% interval over the items (arith: "
             "also on its 81 fresh and 119 twin items apart); each control's accuracy; the message's bytes per item; "
             "latency per query against `two_stage` (median over the queries of `field_latency_<task>.json`, "
             "batch 1 and 16). Regenerate: `python benchmarks/field_table.py`.", ""]
    for task in sorted({r["recipe"]["task"]["name"] for r in runs}):
        latency = latency_of(task)
        timed, batch = latency["systems"], latency.get("batch", 16)
        mine = [r for r in runs if r["recipe"]["task"]["name"] == task]
        pair = f"{mine[0]['recipe']['models']['source']} -> {mine[0]['recipe']['models']['target']}"
        subsets = task_subsets(mine[0]["recipe"])
        lines += [f"## {task} ({pair})", "",
                  "| system | kind | accuracy [95% CI] | fresh / twin | " + " | ".join(CONTROLS)
                  + f" | bytes | latency vs two_stage, batch 1 | batch {batch} |",
                  "|---|---|---|---|" + "---|" * len(CONTROLS) + "---|---|---|"]
        rows = []
        systems = mine[0]["test"]["systems"]
        for name in BASELINES:
            rows.append((name, "baseline", systems.get(name), {}, timed.get(name), mine[0]["records"], name))
        for r in mine:
            label = r["recipe"]["name"]
            s = r["test"]["systems"]
            rows.append((label, f"channel ({r['recipe']['translator']['name']})", s.get("bridged"),
                         {c: s.get(c) for c in CONTROLS}, timed.get(label), r["records"], "bridged"))
        reference = timed.get("two_stage")
        table = []
        for name, kind, s, controls, t, records, system in rows:
            ratio = [f"{t[k] / reference[k]:.2f}" if t and reference else "-" for k in ("batch 1", f"batch {batch}")]
            parts = subset_accuracies(records, system, subsets)
            lines.append(f"| {name} | {kind} | {_acc(s)} | {parts} | "
                         + " | ".join(_acc(controls.get(c)) if controls else "-" for c in CONTROLS)
                         + f" | {_bytes(s)} | {ratio[0]} | {ratio[1]} |")
            table.append({"system": name, "kind": kind, "accuracy": s and s["accuracy"], "ci95": s and s["ci95"],
                          "fresh_twin": parts, "controls": {c: (v or {}).get("accuracy") for c, v in controls.items()},
                          "bytes": s and s.get("message_bytes"), "latency_vs_two_stage": ratio})
        out["tasks"][task] = {"pair": pair, "runs": [r["run"] for r in mine], "rows": table,
                              "latency": latency.get("command")}
        lines.append("")
    return out, lines


def write() -> dict[str, str]:
    out, lines = build()
    return {"field_table.md": "\n".join(lines) + "\n", "field_table.json": json.dumps(out, indent=2) + "\n"}


def pack(folders: list[str]) -> None:
    pack_runs(folders, RUNS)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "pack":
        pack(argv[1:])
        return 0
    return write_or_check(write(), check=bool(argv) and argv[0] == "check")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
