"""Experiment reports generated from run folders: the experiment table and the recipe differences.

Every number comes from the run folders (``recipe.yaml``, ``summary.json``, ``run.json``); nothing is
typed by hand. Selection reads dev only: the table quotes the dev peak that chose ``best/`` and the
test accuracy of those weights and of the final weights, never a test peak.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from latentbridge.report.runs import RunRecord, flatten

IGNORED_KEYS = ("run_dir", "loggers")


MISSING = "<absent>"


def _subtree(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


# The recipe blocks that choose a plugin by ``name``; another name there is another plugin, whose
# settings are its own (they are not differences of their own, only of the swap).
PLUGIN_BLOCKS = ("task", "translator", "injection")


def plugin_name(block: Any) -> str | None:
    """The plugin a block names (``{"name": "linear", ...}`` or the short form ``"linear"``)."""
    if isinstance(block, str):
        return block
    name = block.get("name") if isinstance(block, dict) else None
    return name if isinstance(name, str) else None


def is_swap(key: str, values: Sequence[Any]) -> bool:
    """Whether a :func:`differences` entry is a plugin swap: a plugin block naming different plugins."""
    return key in PLUGIN_BLOCKS and len({plugin_name(v) for v in values if plugin_name(v) is not None}) > 1


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in recipe.items() if k not in IGNORED_KEYS}
    for block in PLUGIN_BLOCKS:
        if isinstance(out.get(block), str):
            out[block] = {"name": out[block]}
    return out


def differences(runs: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Resolved-recipe keys whose values differ between the runs. A plugin block naming different
    plugins (``translator: linear`` against ``resampler``) comes first, as one entry: each run's
    block. A block that some runs lack altogether (an objective an ablation removed) is one entry:
    its settings, or absent."""
    recipes = [_comparable(r.recipe) for r in runs]
    swaps = {block: [r.get(block, MISSING) for r in recipes] for block in PLUGIN_BLOCKS}
    swaps = {block: values for block, values in swaps.items() if is_swap(block, values)}
    flat = [flatten({k: v for k, v in r.items() if k not in swaps}) for r in recipes]
    keys = sorted(set().union(*flat))
    out: dict[str, list[Any]] = dict(swaps)
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


def shared_differences(block: str, values: Sequence[Any]) -> dict[str, list[Any]]:
    """Within a swapped plugin block: the settings every run's plugin has (``k`` of two
    translators) whose values still differ, as ``block.key``; absent for a run without the block."""
    flat = [flatten({k: v for k, v in b.items() if k != "name"}, block) if isinstance(b, dict) else None
            for b in values]
    present = [f for f in flat if f is not None]
    keys = [k for k in present[0] if all(k in f for f in present)] if present else []
    out = {}
    for key in keys:
        column = [MISSING if f is None else f[key] for f in flat]
        if len({json.dumps(f[key]) for f in present}) > 1:
            out[key] = column
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


def _setting(key: str, value: Any, values: Sequence[Any]) -> str:
    short = _shorten_key(key)
    if value == MISSING:
        return f"no {short}"
    if isinstance(value, dict) and MISSING in values:
        return f"with {short}"
    return f"{short}={value if isinstance(value, str) else json.dumps(value)}"


def run_settings(run: RunRecord, diff: dict[str, list[Any]], index: int, limit: int = 4) -> str:
    """The few settings that differ between the runs, for the table's config column: plugin swaps
    first (``translator=resampler``), then the other differences."""
    swaps, items = [], []
    for key, values in diff.items():
        if key in ("name", "seed"):
            continue
        if not is_swap(key, values):
            items.append(_setting(key, values[index], values))
            continue
        value = values[index]
        swaps.append(f"no {key}" if value == MISSING else f"{key}={plugin_name(value)}")
        items += [_setting(k, vs[index], vs) for k, vs in shared_differences(key, values).items()
                  if vs[index] != MISSING]
    items = swaps + items
    text = ", ".join(items[:limit]) + (", …" if len(items) > limit else "")
    return text or "-"


def format_p(p: float | None) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.3g}"


def flow_cell(summary: dict[str, Any] | None) -> str:
    """``+0.050, p = 0.0123``: bridged − shuffled accuracy on the same items, exact McNemar p."""
    flow = summary.get("information_flow") if summary else None
    return "-" if flow is None else f"{flow['difference']:+.3f}, p = {format_p(flow['p_value'])}"


EXPERIMENT_HEADER = ("run id", "recipe", "settings", "seed", "dev peak (step)", "test: best", "test: final (step)",
                     "source", "target", "relay", "shuffled", "null", "bridged − shuffled, p", "invalid", "flags",
                     "sample bridged output")


def experiment_table(runs: Sequence[RunRecord]) -> list[str]:
    """One row per run: the dev peak that chose ``best/`` (its step), test accuracy of those weights and
    of the final weights; then, on test with the best weights, the baselines, the controls, the
    information-flow figure, invalid answers, the flags and a sample output."""
    diff = differences(runs)
    lines = ["| " + " | ".join(EXPERIMENT_HEADER) + " |", "|" + "---|" * len(EXPERIMENT_HEADER)]
    for i, run in enumerate(runs):
        peak, best, final = run.dev_peak, run.test_best, run.test_final
        shown = best or final
        bridged = shown["systems"]["bridged"] if shown else None
        final_cell = "-" if final is None else f"{_fmt(run.accuracy(final, 'bridged'))} ({final['step']})"
        row = (
            f"`{run.run_id}`", run.name, run_settings(run, diff, i), str(run.seed),
            f"{_fmt(run.accuracy(peak, 'bridged'))} ({peak['step']})", _fmt(run.accuracy(best, "bridged")), final_cell,
            *(_fmt(run.accuracy(shown, s)) for s in ("source", "target", "relay", "shuffled", "null")),
            flow_cell(shown), "-" if bridged is None else str(bridged["invalid"]), "; ".join(run.flags()) or "-",
            _cell(run.sample),
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


EXPERIMENT_NOTE = (
    "`best/` is chosen on dev (the dev peak, bridged accuracy); test is read only at the end, for those "
    "weights (test: best) and for the final weights (test: final). The baselines, the controls (shuffled: "
    "the message from another item's source states; null: from the source reading the prompt without "
    "the question), bridged − shuffled (exact McNemar p), invalid answers and the sample are on test with "
    "the best weights. Flags: collapse (one answer covers at least half of the valid answers); no "
    "information from the source (bridged not better than shuffled at p < 0.05); tagged (best) or (final) "
    "when only those weights show it.")


def differences_section(runs: Sequence[RunRecord]) -> list[str]:
    diff = differences(runs)
    if not diff:
        return ["The runs' resolved recipes are identical (apart from where they were written)."]
    lines = ["| key | " + " | ".join(f"`{r.run_id}`" for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for key, values in diff.items():
        cell = _plugin_cell if is_swap(key, values) else _value_cell
        lines.append(f"| `{key}` | " + " | ".join(cell(v) for v in values) + " |")
    return lines


def _value_cell(value: Any) -> str:
    return "absent" if value == MISSING else f"`{json.dumps(value)}`"


def _plugin_cell(block: Any) -> str:
    """The cell of a swapped block: the plugin's name in backticks, then its settings as JSON."""
    if block == MISSING:
        return "absent"
    settings = {k: v for k, v in block.items() if k != "name"} if isinstance(block, dict) else {}
    return f"`{plugin_name(block)}`" + (f" `{json.dumps(settings)}`" if settings else "")
