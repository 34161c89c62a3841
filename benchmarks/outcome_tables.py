"""Tables of the measured outcomes, read from the sweep folders that `benchmarks/outcomes.sh` wrote.

    python benchmarks/outcome_tables.py [--runs runs/sweeps]

Writes results/seed_table.md (+ the sweep's curves), results/softonly.md and results/translators.md.
Every number is read from the run folders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from latentbridge.report.document import write_report
from latentbridge.report.runs import expand_run_dirs, load_run, seed_groups
from latentbridge.report.seeds import format_mean_interval, paired_test_cell

RESULTS = Path(__file__).resolve().parent / "results"


def runs_in(folder: Path) -> dict[str, list]:
    """Run records grouped by configuration (the folder name without -seedN)."""
    return {name: [load_run(f) for f in folders] for name, folders in seed_groups(expand_run_dirs([folder])).items()}


def examples_per_s(run) -> float:
    lines = [json.loads(x) for x in (run.folder / "speed.jsonl").read_text().splitlines() if x.strip()]
    return statistics.median(x["examples_per_s"] for x in lines)


def per_seed(runs) -> str:
    cells = []
    for r in runs:
        s = r.final["systems"]["bridged"]
        low, high = s["ci95"]
        cells.append(f"{s['accuracy']:.3f} [{low:.2f}, {high:.2f}]")
    return "; ".join(cells)


def softonly_table(groups: dict[str, list], baseline: str = "prompt_softonly_phase2_swap") -> list[str]:
    lines = ["| recipe | seeds | bridged final, mean ± 95% CI | per seed (Wilson 95%) | bridged peak | target alone | "
             f"distinct answers (per seed) | top share (per seed) | collapsed | vs {baseline}: difference, p |",
             "|" + "---|" * 10]
    for name, runs in groups.items():
        test = paired_test_cell(runs, groups[baseline]) if name != baseline and baseline in groups else "-"
        finals = [r.accuracy(r.final, "bridged") for r in runs]
        peaks = [r.accuracy(r.peak, "bridged") for r in runs]
        b = [r.final["systems"]["bridged"] for r in runs]
        lines.append(
            f"| {name} | {len(runs)} | {format_mean_interval(finals)} | {per_seed(runs)} | {format_mean_interval(peaks)} | "
            f"{runs[0].accuracy(runs[0].final, 'target'):.3f} | {', '.join(str(x['distinct']) for x in b)} | "
            f"{', '.join(format(x['top_share'], '.2f') for x in b)} | {sum(x['collapsed'] for x in b)}/{len(b)} | {test} |")
    return lines


def translator_rows(groups: dict[str, list], setting: str) -> list[str]:
    rows = []
    for runs in groups.values():
        translator = runs[0].recipe["translator"]
        label = translator["name"] + (f" ({translator['projection']} projection)" if translator.get("projection") else "")
        finals = [r.accuracy(r.final, "bridged") for r in runs]
        peaks = [r.accuracy(r.peak, "bridged") for r in runs]
        speed = statistics.median(examples_per_s(r) for r in runs)
        params = json.loads((runs[0].folder / "run.json").read_text())["translator"]["parameters"]
        rows.append(f"| {setting} | {label} | {params:,} | {len(runs)} | {format_mean_interval(finals)} | {format_mean_interval(peaks)} | "
                    f"{runs[0].accuracy(runs[0].final, 'target'):.3f} | {speed:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/sweeps")
    args = parser.parse_args()
    root = Path(args.runs)
    RESULTS.mkdir(exist_ok=True)

    if (root / "seed_table").is_dir():  # the report, written anew by this version's `latentbridge report`
        groups = seed_groups(expand_run_dirs([root / "seed_table"]))
        order = sorted(groups, key=lambda name: name != "phase1_full")  # compared against phase 1, as the seed did
        groups = {name: groups[name] for name in order}
        target = RESULTS / "seed_table"
        shutil.rmtree(target, ignore_errors=True)
        path = write_report([f for name in order for f in groups[name]], target, groups=groups,
                            title="The seed's table: phase1_full vs ablB_kl_only, 3 seeds")
        print(f"wrote {path}")

    if (root / "softonly").is_dir():
        groups = runs_in(root / "softonly")
        text = ["# Soft-only communication on the tiny pair", "",
                "Command: `benchmarks/outcomes.sh` (the `softonly` sweep), then `python benchmarks/outcome_tables.py`.", "",
                "Llama -> Mistral direction (tiny-llama -> tiny-mistral), prompt teacher, `soft_only`, DiT translator,",
                "2000 steps, 200 test problems per evaluation, seeds 0-2. Collapse: one answer covers >= 50% of the",
                "valid answers. The test: exact sign-flip over items, each item's correct answers summed over seeds.",
                "", *softonly_table(groups), ""]
        (RESULTS / "softonly.md").write_text("\n".join(text) + "\n")
        print("\n".join(text))

    sections = [("answer teacher, soft_plus_text", ["translators_softplus", "translators_softplus_dit"]),
                ("prompt teacher, soft_only", ["translators_softonly"])]
    rows = []
    for setting, folders in sections:
        for folder in folders:
            if (root / folder).is_dir():
                rows += translator_rows(runs_in(root / folder), setting)
        if setting.endswith("soft_only") and (root / "softonly").is_dir():  # the DiT row: the softonly sweep
            dit = {"dit": runs_in(root / "softonly").get("prompt_softonly_phase2_swap", [])}
            rows += translator_rows({k: v for k, v in dit.items() if v}, setting)
    if rows:
        text = ["# Translators on the tiny pair", "",
                "Command: `benchmarks/outcomes.sh` (the `translators_*` and `softonly` sweeps), then",
                "`python benchmarks/outcome_tables.py`. Bridged accuracy on the 200 arith test problems,",
                "mean ± 95% t interval over the seeds (0, 1, ...) in the seeds column; examples/s: median training",
                "throughput over the logged windows on 2 CPU cores (speed.jsonl; runs made before evaluation time",
                "was excluded from it count it in one window per evaluation, which the median leaves out). soft_plus_text: `answer_softplus` (300 steps; the DiT with `dit_flow` 0.1).",
                "soft_only: `prompt_softonly_phase2_swap` (2000 steps, kl + prompt alignment + RoPE phase; the DiT",
                "adds `dit_flow` 1.0). identity uses a linear projection (the widths differ).", "",
                "| setting | translator | parameters | seeds | bridged final | bridged peak | target alone | train examples/s |",
                "|" + "---|" * 8, *rows, ""]
        (RESULTS / "translators.md").write_text("\n".join(text) + "\n")
        print("\n".join(text))


if __name__ == "__main__":
    main()
