"""Summaries of evaluation records: accuracy with intervals, invalid answers, collapse, prompt echo.

Used by the evaluation harness (``summary.json``) and by ``latentbridge summarize`` (from JSONL files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.eval.stats import answer_spread, echoes_question, mcnemar_exact, wilson_interval
from latentbridge.eval.systems import SYSTEMS

EVAL_FILE_RE = re.compile(r"eval_samples_step_(\d+)\.jsonl$")


def system_summary(records: Sequence[dict[str, Any]], system: str) -> dict[str, Any] | None:
    """Accuracy (Wilson 95%), invalid and gold-match counts, answer spread and echo rate of one system,
    or None when the system was not run (its fields are null in every record)."""
    ran = [r for r in records if r.get(f"{system}_full") is not None]
    if not ran:
        return None
    correct = sum(1 for r in ran if r[f"{system}_correct"])
    extracted = [r[f"{system}_extracted"] for r in ran]
    low, high = wilson_interval(correct, len(ran))
    spread = answer_spread(extracted)
    return {
        "n": len(ran),
        "correct": correct,
        "accuracy": correct / len(ran),
        "ci95": [low, high],
        "invalid": sum(1 for a in extracted if a is None),
        "gold_match": sum(1 for r, a in zip(ran, extracted, strict=True) if a is not None and a == r["gold_extracted"]),
        **spread,
        "echo_rate": sum(echoes_question(r[f"{system}_full"], r["question"]) for r in ran) / len(ran),
        "sample": ran[0][f"{system}_full"],
        "by_filter": filter_accuracies(ran, system),
    }


def filter_accuracies(records: Sequence[dict[str, Any]], system: str) -> dict[str, float]:
    """Accuracy under each answer filter the records hold: the primary one (``<system>_correct``, named by
    the records' ``filters`` or ``primary``) and every ``<system>_correct_<filter>``."""
    prefix = f"{system}_correct_"
    names = sorted({k[len(prefix):] for r in records for k in r if k.startswith(prefix)})
    out = {records[0].get("primary_filter", "primary"): sum(1 for r in records if r[f"{system}_correct"]) / len(records)}
    for name in names:
        out[name] = sum(1 for r in records if r.get(prefix + name)) / len(records)
    return out


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-system summaries plus the paired exact McNemar test of bridged vs target."""
    systems = {s: system_summary(records, s) for s in SYSTEMS}
    paired = None
    both = [r for r in records if r.get("bridged_correct") is not None and r.get("target_correct") is not None]
    if both:
        test = mcnemar_exact([r["bridged_correct"] for r in both], [r["target_correct"] for r in both])
        paired = {"n": len(both), "bridged_only": test["a_only"], "target_only": test["b_only"], "p_value": test["p_value"]}
    return {"n_items": len(records), "systems": systems, "mcnemar_bridged_vs_target": paired}


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise LatentBridgeError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
    return records


def eval_files(paths: Iterable[str | Path]) -> list[tuple[int, Path]]:
    """Evaluation files among ``paths`` (files, or run folders searched for them), in numeric step order."""
    found: list[tuple[int, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = list(path.glob("eval_samples_step_*.jsonl"))
            if not candidates:
                raise LatentBridgeError(f"{path}: no eval_samples_step_<N>.jsonl files in this folder")
        elif path.is_file():
            candidates = [path]
        else:
            raise LatentBridgeError(f"{path}: no such file or folder")
        for file in candidates:
            match = EVAL_FILE_RE.search(file.name)
            step = int(match.group(1)) if match else -1
            if step < 0:
                records = read_records(file)
                step = int(records[0].get("eval_step", -1)) if records else -1
            found.append((step, file))
    return sorted(found, key=lambda item: (str(item[1].parent), item[0]))
