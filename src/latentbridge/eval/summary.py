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
from latentbridge.eval.systems import system_role

# eval_samples_<split>[_<weights>]_step_<N>.jsonl (older runs: eval_samples_step_<N>.jsonl)
EVAL_FILE_RE = re.compile(r"eval_samples_(?:[a-z]+_)*step_(\d+)\.jsonl$")


def systems_in(records: Sequence[dict[str, Any]]) -> list[str]:
    """The systems the records have fields for (``<system>_full``), in their order in the file."""
    return [k[: -len("_full")] for k in (records[0] if records else {}) if k.endswith("_full")]


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
        "gold_match": sum(1 for r, a in zip(ran, extracted, strict=True) if a is not None and a in _golds(r)),
        **spread,
        "echo_rate": sum(echoes_question(r[f"{system}_full"], r["question"]) for r in ran) / len(ran),
        "sample": ran[0][f"{system}_full"],
        "by_filter": (by_filter := filter_accuracies(ran, system)),
        **choice_summary(ran, system, by_filter),
        **message_size(ran, system),
        **subset_accuracies(ran, system),
        **metric_means(ran, system),
    }


def _golds(record: dict[str, Any]) -> set[Any]:
    """The extracted gold answer and, where a task keeps several (``gold_answers``; extracted as its outputs
    are: ``gold_answers_extracted``), every one of them."""
    return {record["gold_extracted"], *record.get("gold_answers_extracted", ())}


def metric_means(records: Sequence[dict[str, Any]], system: str) -> dict[str, Any]:
    """Where the task grades answers beyond right/wrong (``metrics`` in the records: ``qa_context``'s
    ``f1``), the system's mean of each: ``metrics``."""
    names = records[0].get("metrics") or []
    if not names:
        return {}
    return {"metrics": {m: sum(float(r[f"{system}_{m}"]) for r in records) / len(records) for m in names}}


def subset_accuracies(records: Sequence[dict[str, Any]], system: str) -> dict[str, Any]:
    """Where the task splits its items into subsets (``subset`` in the records: arith's ``fresh`` and
    ``twin``), the system's accuracy on each, with its Wilson 95% interval: ``by_subset``."""
    names = sorted({r["subset"] for r in records if r.get("subset") is not None})
    if not names:
        return {}
    out = {}
    for name in names:
        mine = [r for r in records if r.get("subset") == name]
        correct = sum(1 for r in mine if r[f"{system}_correct"])
        out[name] = {"n": len(mine), "correct": correct, "accuracy": correct / len(mine),
                     "ci95": list(wilson_interval(correct, len(mine)))}
    return {"by_subset": out}


def choice_summary(records: Sequence[dict[str, Any]], system: str, by_filter: dict[str, float]) -> dict[str, Any]:
    """Multiple-choice records: a Wilson interval per figure (acc, acc_norm, generate), the gold choice's
    mean NLL and how many outputs named no choice."""
    scored = [r for r in records if r.get(f"{system}_gold_nll") is not None]
    if not scored:
        return {}
    generated = [r for r in scored if r.get(f"{system}_full") is not None]
    n = len(records)
    return {"ci95_by_filter": {name: list(wilson_interval(round(acc * n), n)) for name, acc in by_filter.items()},
            "gold_nll": sum(r[f"{system}_gold_nll"] for r in scored) / len(scored),
            "generate_invalid": sum(1 for r in generated if r.get(f"{system}_generated_choice") is None)}


def message_size(records: Sequence[dict[str, Any]], system: str) -> dict[str, float]:
    """The mean bytes and token positions of the system's message per item, where the records hold them."""
    sized = [r for r in records if r.get(f"{system}_message_bytes") is not None]
    if not sized:
        return {}
    return {"message_bytes": sum(r[f"{system}_message_bytes"] for r in sized) / len(sized),
            "message_tokens": sum(r[f"{system}_message_tokens"] for r in sized) / len(sized)}


def filter_accuracies(records: Sequence[dict[str, Any]], system: str) -> dict[str, float]:
    """Accuracy under each answer filter the records hold: the primary one (``<system>_correct``, named by
    the records' ``filters`` or ``primary``) and every ``<system>_correct_<filter>``."""
    prefix = f"{system}_correct_"
    names = sorted({k[len(prefix):] for r in records for k in r if k.startswith(prefix)})
    out = {records[0].get("primary_filter", "primary"): sum(1 for r in records if r[f"{system}_correct"]) / len(records)}
    for name in names:
        out[name] = sum(1 for r in records if r.get(prefix + name)) / len(records)
    return out


NO_INFORMATION_P = 0.05  # bridged must beat shuffled at this level for the source to count as read


def paired_against(records: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """Exact McNemar of system ``a`` against ``b`` on the items both ran: discordant counts, the
    difference in accuracy and p; None when they share no item."""
    both = [r for r in records if r.get(f"{a}_correct") is not None and r.get(f"{b}_correct") is not None]
    if not both:
        return None
    test = mcnemar_exact([r[f"{a}_correct"] for r in both], [r[f"{b}_correct"] for r in both])
    return {"n": len(both), f"{a}_only": test["a_only"], f"{b}_only": test["b_only"],
            "difference": (test["a_only"] - test["b_only"]) / len(both), "p_value": test["p_value"]}


def information_flow(records: Sequence[dict[str, Any]], control: str = "shuffled") -> dict[str, Any] | None:
    """``bridged − <control>`` (by default ``shuffled``) with its exact McNemar test: does the target read
    anything from the source about *this* item? ``no_information`` unless bridged beats the control at p < 0.05."""
    paired = paired_against(records, "bridged", control)
    if paired is None:
        return None
    paired["no_information"] = not (paired["difference"] > 0 and paired["p_value"] < NO_INFORMATION_P)
    return paired


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-system summaries, the paired exact McNemar test of bridged vs target, and the
    information-flow figure (bridged vs the shuffled control)."""
    systems = {s: system_summary(records, s) for s in systems_in(records)}
    vs_target = paired_against(records, "bridged", "target")
    by_control = {c: flow for c in systems if system_role(c) == "control" and (flow := information_flow(records, c))}
    return {"n_items": len(records), "split": records[0].get("split", "test") if records else None, "systems": systems,
            "mcnemar_bridged_vs_target": vs_target, "information_flow": information_flow(records),
            "information_flow_by_control": by_control}


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
    """Evaluation files among ``paths`` (files, or run folders searched for them): per folder, the dev
    evaluations in step order, then the test ones (the best weights' before the final's when earlier)."""
    found: list[tuple[int, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = list(path.glob("eval_samples_*step_*.jsonl"))
            if not candidates:
                raise LatentBridgeError(f"{path}: no eval_samples_<split>_step_<N>.jsonl files in this folder")
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
    def split_rank(file: Path) -> int:
        return 0 if "_dev_" in file.name else 1

    return sorted(found, key=lambda item: (str(item[1].parent), split_rank(item[1]), item[0]))
