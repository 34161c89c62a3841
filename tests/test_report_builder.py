"""Run folders written by hand in the runner's layout, for the report tests; and checks of the builder.

A run: dev evaluations at the given steps (``best/`` chosen on them the runner's way: the best bridged
accuracy on dev, the earliest on ties), then the test evaluations of the final weights and of the best
weights (a copy of the final one when the best step is the final step), each written as per-item
``eval_samples_*.jsonl`` records and summarized with the harness's own ``summarize_records``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from latentbridge.eval.summary import summarize_records
from latentbridge.eval.systems import SYSTEMS
from latentbridge.report.archive import verify_run
from latentbridge.report.runs import load_run

ITEMS = 10
BASE_COUNTS = {"source": 5, "target": 8, "relay": 6, "shuffled": 1, "null": 0}
Counts = int | Mapping[str, int | None]


def counts(bridged: int, **others: int | None) -> dict[str, int | None]:
    """Correct answers (of ITEMS) per system: the defaults, bridged, and any others given."""
    return {**BASE_COUNTS, "bridged": bridged, **others}


def _counts(spec: Counts) -> dict[str, int | None]:
    return counts(spec) if isinstance(spec, int) else {**BASE_COUNTS, **spec}


def make_records(step: int, split: str, spec: Counts, tag: str, collapse: bool = False) -> list[dict[str, Any]]:
    """Per-item records: system s answers the first k items right (k = its count); a wrong answer is
    a distinct number, or ``7`` for every wrong bridged answer when ``collapse``. A count of None: not run."""
    k = _counts(spec)
    records = []
    for i in range(ITEMS):
        gold = str(10 + i)
        record: dict[str, Any] = {
            "eval_step": step, "split": split, "index": i, "id": f"{split}-{i}", "question": f"What is {i} plus 10?",
            "gold_full_text": f"{i} + 10 = {gold}\n#### {gold}", "gold_extracted": gold, "primary_filter": "strict-match"}
        for system in SYSTEMS:
            if k.get(system) is None:
                record.update({f"{system}_full": None, f"{system}_extracted": None, f"{system}_correct": None,
                               f"{system}_correct_flexible-extract": None})
                continue
            right = i < k[system]
            answer = gold if right else ("7" if collapse and system == "bridged" else str(100 + i))
            record.update({f"{system}_full": f"{tag} {system} {i}\n#### {answer}", f"{system}_extracted": answer,
                           f"{system}_correct": right, f"{system}_correct_flexible-extract": right})
        if k.get("shuffled") is not None:
            record["shuffled_source_id"] = f"{split}-{(i + 1) % ITEMS}"
        records.append(record)
    return records


def _write(folder: Path, name: str, records: list[dict[str, Any]]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def make_run(
    root: Path, name: str, recipe: dict[str, Any], seed: int, dev: Mapping[int, Counts], final: Counts | None = None,
    best: Counts | None = None, *, status: str = "finished", collapse: Sequence[str] = (), parameters: int = 1234,
    speed: float | None = None, stopped_early: bool = False,
) -> Path:
    """The folder ``root/<name>-seed<seed>``: dev evaluations ``{step: counts}``, test counts of the
    final weights (``final``; None: not tested yet) and of the best weights (``best``, needed when the
    best step is not the final step). ``collapse``: "dev", "final", "best": whose bridged answers collapse.
    Checkpoints, best/ and weights are written too (a pack must leave them out)."""
    folder = root / f"{name}-seed{seed}"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "seed": seed, "run_dir": f"runs/{folder.name}"}))
    evaluations, best_step, best_acc = [], None, None
    for step, spec in sorted(dev.items()):
        records = make_records(step, "dev", spec, f"{name}{seed}", collapse="dev" in collapse)
        _write(folder, f"eval_samples_dev_step_{step}.jsonl", records)
        evaluations.append({"step": step, "split": "dev", **summarize_records(records)})
        acc = evaluations[-1]["systems"]["bridged"]["accuracy"]
        if best_acc is None or acc > best_acc:
            best_step, best_acc = step, acc
    final_step = evaluations[-1]["step"]
    test: dict[str, Any] = {}
    if final is not None:
        records = make_records(final_step, "test", final, f"{name}{seed}", collapse="final" in collapse)
        _write(folder, f"eval_samples_test_step_{final_step}.jsonl", records)
        test["final"] = {"step": final_step, "split": "test", **summarize_records(records)}
        if best_step == final_step:
            test["best"] = {**test["final"], "weights": "best"}
        elif best is not None:
            records = make_records(best_step, "test", best, f"{name}{seed}b", collapse="best" in collapse)
            _write(folder, f"eval_samples_test_best_step_{best_step}.jsonl", records)
            test["best"] = {"step": best_step, "split": "test", "weights": "best", **summarize_records(records)}
    (folder / "summary.json").write_text(json.dumps({
        "recipe": recipe.get("name"), "evaluations": evaluations,
        "best": {"step": best_step, "bridged_accuracy": best_acc, "split": "dev"}, "test": test,
        "final_step": final_step, "stopped_early": stopped_early}, indent=2))
    (folder / "run.json").write_text(json.dumps({"recipe": recipe.get("name"), "status": status,
                                                 "translator": {"name": "linear", "parameters": parameters}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "loss/kl": 0.5 / s}) + "\n"
                                                   for s in range(50, final_step + 1, 50)))
    if speed is not None:
        (folder / "speed.jsonl").write_text("".join(json.dumps({"step": s, "examples_per_s": speed + d}) + "\n"
                                                    for s, d in ((100, -1.0), (200, 0.0), (300, 5.0))))
    for junk in ("checkpoints/step_100/optimizer.pt", "best/translator.safetensors", "translator.safetensors"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"weights")
    return folder


def make_old_run(root: Path, name: str = "old") -> Path:
    """A run folder of an older version: evaluations on test, no ``test`` entry, eval_samples_step_<N>.jsonl."""
    folder = root / f"{name}-seed0"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "seed": 0}))
    records = make_records(100, "test", 5, name)
    for r in records:
        del r["split"]
    _write(folder, "eval_samples_step_100.jsonl", records)
    summary = summarize_records(records)
    summary.pop("split")
    (folder / "summary.json").write_text(json.dumps({"evaluations": [{"step": 100, **summary}]}))
    return folder


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the first table under ``## heading`` (header row left out)."""
    section = text.split(f"## {heading}\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_a_built_run_reads_like_the_runners(tmp_path):
    folder = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 6, 200: 4}, final=counts(4), best=counts(7))
    run = load_run(folder)
    assert run.best_step == 100 and run.dev_peak["step"] == 100
    assert run.accuracy(run.test_best, "bridged") == 0.7 and run.accuracy(run.test_final, "bridged") == 0.4
    assert sorted(p.name for p in folder.glob("eval_samples_*")) == [
        "eval_samples_dev_step_100.jsonl", "eval_samples_dev_step_200.jsonl", "eval_samples_test_best_step_100.jsonl",
        "eval_samples_test_step_200.jsonl"]
    assert verify_run(folder) == []
    # the best step is the final step: best is the final evaluation, marked, with no file of its own
    same = load_run(make_run(tmp_path, "s", {"name": "s"}, 0, {100: 4, 200: 6}, final=6))
    assert same.test_best == {**same.test_final, "weights": "best"}
    assert not list(same.folder.glob("eval_samples_test_best_*"))
