"""The context split on the tiny models: a prompt-view channel against the skyline and the two-stage text
baseline, over seeds, with every control, its bytes and its latency; and the curves of accuracy against
message bytes and against the number of facts in the context.

Kept runs (their small files, made on a clean committed tree) under ``results/runs/context_split/``:

- ``<recipe>-seed<N>``: the channel's seeds (``latentbridge sweep passages_kv --seeds 5``), each with its test
  evaluation of the weights chosen on dev (every system: the baselines, the channel and its controls);
  ``eval_best_facts<F>/`` beside them: those weights on test items with F facts (``facts`` below);
- ``<recipe>-k<K>``: one seed of a compressed channel at k message positions (the bytes curve).

``results/context_split_latency.json`` is ``benchmarks/latency.py --name context_split_latency``'s measure.

    python benchmarks/context_split.py                      # write results/context_split.md and .json
    python benchmarks/context_split.py check                # regenerate and compare byte for byte
    python benchmarks/context_split.py pack RUN_DIR...      # keep runs under results/runs/context_split/
    python benchmarks/context_split.py facts RUN_DIR...     # evaluate each run's best weights at 1..16 facts

The goal (issue 25): the best prompt-view channel at >= 0.9 x skyline accuracy, >= two_stage's accuracy, and
<= 1/3 of two_stage's latency at batch 1 and at batch 16.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from common import RESULTS, pack_runs, write_or_check

from latentbridge.eval.stats import t_interval
from latentbridge.report.provenance import provenance_problems
from latentbridge.zoo.passages import SPLIT_SIZES

RUNS = RESULTS / "runs" / "context_split"
REPO = Path(__file__).resolve().parents[1]
BASELINES = ("target", "source", "skyline", "relay", "two_stage")
CONTROLS = ("shuffled", "null", "covgauss", "randomrot")
FACTS = (1, 2, 4, 8, 12, 16)
FACTS_SYSTEMS = "[target, skyline, bridged, shuffled]"
FACTS_TRAIN = f"task.n_train={SPLIT_SIZES['train']}"  # the default (see facts())
SEED = re.compile(r"^(?P<name>.+)-seed(?P<seed>\d+)$")
K = re.compile(r"^(?P<name>.+)-k(?P<k>\d+)$")


def _best(folder: Path) -> dict[str, Any]:
    problems = provenance_problems(folder, REPO)
    if problems:
        raise SystemExit(f"{folder.name}: not publishable: {'; '.join(problems)}")
    summary = json.loads((folder / "summary.json").read_text())["test"]
    return summary.get("best") or summary["final"]


def _dev(folder: Path) -> float:
    """The dev accuracy of the weights the run chose on dev (what picks the best channel)."""
    return json.loads((folder / "summary.json").read_text())["best"]["bridged_accuracy"]


def _mean(values: list[float]) -> dict[str, Any]:
    mean, low, high = t_interval(values) if len(values) > 1 else (values[0], values[0], values[0])
    return {"mean": mean, "ci95": [low, high], "per_seed": values}


def _fmt(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    return f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def seeds() -> dict[str, list[tuple[int, Path, dict[str, Any]]]]:
    """Each channel's seed runs: ``name -> [(seed, folder, best test summary)]``."""
    out: dict[str, list[tuple[int, Path, dict[str, Any]]]] = {}
    for folder in sorted(p for p in RUNS.iterdir() if p.is_dir()):
        match = SEED.match(folder.name)
        if match:
            out.setdefault(match["name"], []).append((int(match["seed"]), folder, _best(folder)))
    return out


def latency() -> dict[str, Any]:
    path = RESULTS / "context_split_latency.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    rows = {}
    for label, row in data["systems"].items():
        name = label.split(": ", 1)[1].split(" (")[0] if label.startswith("bridged: ") else label
        rows[{"target alone": "target", "text relay": "relay"}.get(name, name)] = row
    return {"rows": rows, "batch": data["batch"], "command": data.get("command")}


def channel_rows(channels: dict[str, list], timed: dict[str, Any], batch: int) -> tuple[list[str], dict[str, Any]]:
    lines = ["| system | seeds | accuracy, mean [95% CI over seeds] | per seed | "
             + " | ".join(CONTROLS) + " | bytes per item | latency vs two_stage, batch 1 | batch " + str(batch) + " |",
             "|---|---|---|---|" + "---|" * len(CONTROLS) + "---|---|---|"]
    out: dict[str, Any] = {}
    first = next(iter(channels.values()))
    reference = timed.get("two_stage")

    def ratio(name: str) -> list[float | None]:
        t = timed.get(name)
        # latency.py --repeats: the median of its rounds' ratios (each round times every system once)
        return [t.get(f"ratio, {k}", t[k] / reference[k]) if t and reference else None
                for k in ("batch 1", f"batch {batch}")]

    def row(name: str, system: str, runs: list, kind: str) -> None:
        accs = [s["systems"][system]["accuracy"] for _, _, s in runs if s["systems"].get(system)]
        if not accs:
            return
        controls = {c: _mean([s["systems"][c]["accuracy"] for _, _, s in runs]) for c in CONTROLS
                    if kind == "channel" and all(s["systems"].get(c) for _, _, s in runs)}
        size = [s["systems"][system].get("message_bytes") for _, _, s in runs]
        r = ratio(name)
        entry = {"kind": kind, "accuracy": _mean(accs), "controls": controls, "seeds": len(accs),
                 "message_bytes": size[0], "latency_vs_two_stage": r}
        out[name] = entry
        lines.append(f"| {name} | {len(accs)} | {_fmt(entry['accuracy'])} | "
                     + ", ".join(f"{a:.3f}" for a in accs) + " | "
                     + " | ".join(_fmt(controls.get(c)) for c in CONTROLS)
                     + f" | {'-' if size[0] is None else f'{size[0]:,.0f}'} | "
                     + " | ".join("-" if x is None else f"{x:.2f}" for x in r) + " |")

    for name in BASELINES:  # the same in every run of the pair: read from the first channel's seeds
        row(name, name, first, "baseline")
    for name, runs in channels.items():
        row(name, "bridged", runs, "channel")
    return lines, out


def bytes_curve() -> tuple[list[str], list[dict[str, Any]]]:
    points = []
    for folder in sorted(p for p in RUNS.iterdir() if p.is_dir() and K.match(p.name)):
        match = K.match(folder.name)
        s = _best(folder)["systems"]
        points.append({"channel": match["name"], "k": int(match["k"]), "bytes": s["bridged"].get("message_bytes"),
                       "accuracy": s["bridged"]["accuracy"], "shuffled": (s.get("shuffled") or {}).get("accuracy")})
    points.sort(key=lambda p: (p["channel"], p["k"]))
    lines = ["| channel | k | bytes per item | accuracy | shuffled |", "|---|---|---|---|---|"]
    lines += [f"| {p['channel']} | {p['k']} | {p['bytes']:,.0f} | {p['accuracy']:.3f} | "
              f"{'-' if p['shuffled'] is None else format(p['shuffled'], '.3f')} |" for p in points]
    return lines, points


def facts_curve(channels: dict[str, list]) -> tuple[list[str], dict[str, Any]]:
    systems = ("target", "skyline", "bridged", "shuffled")
    lines = ["| channel | facts | " + " | ".join(systems) + " | bytes per item |", "|---|---|" + "---|" * len(systems) + "---|"]
    out: dict[str, Any] = {}
    for name, runs in channels.items():
        for f in FACTS:
            found = [json.loads((folder / f"eval_best_facts{f}" / "summary.json").read_text())
                     for _, folder, _ in runs if (folder / f"eval_best_facts{f}" / "summary.json").is_file()]
            if not found:
                continue
            acc = {s: _mean([x["systems"][s]["accuracy"] for x in found]) for s in systems
                   if all(x["systems"].get(s) for x in found)}
            size = found[0]["systems"]["bridged"].get("message_bytes")
            out.setdefault(name, {})[str(f)] = {"seeds": len(found), **acc, "message_bytes": size}
            lines.append(f"| {name} ({len(found)} seeds) | {f} | " + " | ".join(_fmt(acc.get(s)) for s in systems)
                         + f" | {'-' if size is None else f'{size:,.0f}'} |")
    return lines, out


def build() -> tuple[dict[str, Any], list[str]]:
    channels = seeds()
    if not channels:
        raise SystemExit(f"no kept seed runs under {RUNS}")
    timed = latency()
    batch = timed.get("batch", 16)
    recipe = yaml.safe_load((next(iter(channels.values()))[0][1] / "recipe.yaml").read_text())
    pair = f"{recipe['models']['source']} -> {recipe['models']['target']}"
    table, rows = channel_rows(channels, timed.get("rows", {}), batch)
    curve_k, points = bytes_curve()
    curve_f, by_facts = facts_curve(channels)
    dev = {n: _mean([_dev(folder) for _, folder, _ in runs]) for n, runs in channels.items()}
    best = max((n for n in channels), key=lambda n: dev[n]["mean"])  # chosen on dev, never on test
    sky, two = rows["skyline"]["accuracy"]["mean"], rows["two_stage"]["accuracy"]["mean"]
    b = rows[best]
    goal = {"accuracy >= 0.9 x skyline": b["accuracy"]["mean"] >= 0.9 * sky,
            "accuracy >= two_stage": b["accuracy"]["mean"] >= two,
            "latency <= 1/3 two_stage, batch 1": b["latency_vs_two_stage"][0] is not None
            and b["latency_vs_two_stage"][0] <= 1 / 3,
            f"latency <= 1/3 two_stage, batch {batch}": b["latency_vs_two_stage"][1] is not None
            and b["latency_vs_two_stage"][1] <= 1 / 3}
    out = {"pair": pair, "task": recipe["task"], "items": next(iter(channels.values()))[0][2]["n_items"],
           "skyline": {"accuracy": sky, **rows["skyline"]}, "two_stage": {"accuracy": two, **rows["two_stage"]},
           "best_channel": {"name": best, "accuracy": b["accuracy"]["mean"],
                            "latency_vs_two_stage": b["latency_vs_two_stage"][0],
                            "latency_vs_two_stage_batch": b["latency_vs_two_stage"][1],
                            "seeds": b["seeds"], "message_bytes": b["message_bytes"], "controls": b["controls"],
                            "chosen_by": "mean dev accuracy of each seed's dev-chosen weights",
                            "dev_accuracy": {n: d["mean"] for n, d in dev.items()}},
           "goal": goal, "rows": rows, "bytes_curve": points, "facts_curve": by_facts,
           "latency_command": timed.get("command")}
    lines = ["# The context split on the tiny models", "",
             f"`passages` ({recipe['task'].get('n_facts', 4)} facts per context; the target reads the question only), "
             f"{pair}. Test accuracy on {out['items']} items of the weights chosen on dev, mean over seeds with its "
             "t 95% interval (the seed is the unit; the baselines read nothing trained and are the same in every "
             "seed); each control's accuracy; the message's bytes per item; latency per query against "
             "`two_stage` (medians, `context_split_latency.json`). Regenerate: `python benchmarks/context_split.py`.",
             "", *table, "",
             "## The goal", "",
             "Best channel, chosen by dev accuracy (each channel's mean over seeds of its dev-chosen weights: "
             + ", ".join(f"{n} {d['mean']:.3f}" for n, d in dev.items()) + f"): `{best}`, test "
             f"{b['accuracy']['mean']:.3f} against skyline {sky:.3f} (0.9 x = {0.9 * sky:.3f}) and two_stage {two:.3f}.", "",
             *[f"- {k}: {'met' if v else 'missed'}" for k, v in goal.items()], "",
             "## Accuracy against message bytes", "", *curve_k, "",
             "## Accuracy against the number of facts in the context", "",
             "The weights chosen on dev (trained at the recipe's facts per context) on 200 test items with each number "
             "of facts.", "", *curve_f, ""]
    return out, lines


def write() -> dict[str, str]:
    out, lines = build()
    return {"context_split.md": "\n".join(lines) + "\n", "context_split.json": json.dumps(out, indent=2) + "\n"}


def pack(folders: list[str]) -> None:
    """Keep the runs; the dev-chosen weights of each channel's seed 0 only (those the latencies read)."""
    pack_runs(folders, RUNS, "eval_best_facts*", weights=lambda folder: folder.name.endswith("-seed0"))


def facts(folders: list[str]) -> None:
    """Each run's best weights on the test items with 1..16 facts per context (``eval_best_facts<F>/``)."""
    from latentbridge.eval.jobs import evaluate_run

    for raw in folders:
        folder = Path(raw)
        for f in FACTS:
            target = folder / f"eval_best_facts{f}"
            if (target / "summary.json").is_file():
                continue
            # the build loads every split, train too, which a 0-shot test evaluation never reads (test items do not
            # depend on task.n_train; with shots, the exemplars would): 20,000 train items of 6 or more facts need
            # more fresh names than the split has
            evaluate_run(folder, "best", [f"task.n_facts={f}", f"eval.systems={FACTS_SYSTEMS}", FACTS_TRAIN])
            shutil.move(str(folder / "eval_best"), str(target))
            print(f"{folder.name}: {f} facts done", flush=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "pack":
        pack(argv[1:])
        return 0
    if argv and argv[0] == "facts":
        facts(argv[1:])
        return 0
    return write_or_check(write(), check=bool(argv) and argv[0] == "check")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
