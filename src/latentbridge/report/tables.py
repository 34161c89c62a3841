"""Experiment reports generated from run folders: the table, learning curves and the differences.

Every number comes from the run folders (``recipe.yaml``, ``summary.json``, ``metrics.jsonl``,
``eval_samples_step_<N>.jsonl``); nothing is typed by hand. Curves need matplotlib
(``pip install latentbridge[report]``); without it the report says so and keeps the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from latentbridge.report.runs import RunRecord, flatten

IGNORED_KEYS = ("run_dir",)


MISSING = "<absent>"


def _subtree(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def differences(runs: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Resolved-recipe keys whose values differ between the runs. A block that some runs lack
    altogether (an objective an ablation removed) is one entry: its settings, or absent."""
    recipes = [{k: v for k, v in r.recipe.items() if k not in IGNORED_KEYS} for r in runs]
    flat = [flatten(r) for r in recipes]
    keys = sorted(set().union(*flat))
    out: dict[str, list[Any]] = {}
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if len({json.dumps(v) for v in values}) == 1:
            continue
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):  # the shortest block some run lacks entirely
            prefix = ".".join(parts[:depth])
            if any(_subtree(r, prefix) == MISSING for r in recipes):
                out[prefix] = [_subtree(r, prefix) for r in recipes]
                break
        else:
            out[key] = values
    return out


def _shorten_key(key: str) -> str:
    return key.replace("objectives.", "obj.").replace("translator.", "tr.")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cell(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_settings(run: RunRecord, diff: dict[str, list[Any]], index: int, limit: int = 4) -> str:
    """The few settings that differ between the runs, for the table's config column."""
    items = []
    for key, values in diff.items():
        if key in ("name", "seed"):
            continue
        value, short = values[index], _shorten_key(key)
        if value == MISSING:
            items.append(f"no {short}")
        elif isinstance(value, dict) and MISSING in values:
            items.append(f"with {short}")
        else:
            items.append(f"{short}={value if isinstance(value, str) else json.dumps(value)}")
    text = ", ".join(items[:limit]) + (", …" if len(items) > limit else "")
    return text or "-"


def experiment_table(runs: Sequence[RunRecord]) -> list[str]:
    diff = differences(runs)
    header = ("run id", "recipe", "settings", "seed", "bridged peak (step) → final", "source", "target", "relay",
              "invalid", "collapse", "sample bridged output")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, run in enumerate(runs):
        peak, final = run.peak, run.final
        bridged = final["systems"]["bridged"]
        row = (
            f"`{run.run_id}`", run.name, run_settings(run, diff, i), str(run.recipe.get("seed")),
            f"{_fmt(run.accuracy(peak, 'bridged'))} ({peak['step']}) → {_fmt(run.accuracy(final, 'bridged'))}",
            _fmt(run.accuracy(final, "source")), _fmt(run.accuracy(final, "target")), _fmt(run.accuracy(final, "relay")),
            str(bridged["invalid"]), "yes" if bridged["collapsed"] else "no", _cell(run.sample),
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def differences_section(runs: Sequence[RunRecord]) -> list[str]:
    diff = differences(runs)
    if not diff:
        return ["The runs' resolved recipes are identical (apart from where they were written)."]
    lines = ["| key | " + " | ".join(f"`{r.run_id}`" for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for key, values in diff.items():
        lines.append(f"| `{key}` | " + " | ".join("absent" if v == MISSING else f"`{json.dumps(v)}`" for v in values) + " |")
    return lines
