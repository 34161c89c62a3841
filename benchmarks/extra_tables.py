"""Two tables of outcome_tables.py: format_penalty's invalid rate (paired by seed) and the message kinds.

Both read only the runs kept in benchmarks/results/runs/ (and, for the latency column, the committed
results/latency.json), so `python benchmarks/outcome_tables.py check` regenerates them byte for byte.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from latentbridge.eval.stats import paired_t, sign_flip_test
from latentbridge.report.runs import RunRecord, load_run, seed_groups
from latentbridge.report.seeds import (
    format_mean_interval,
    format_seeds_items,
    format_signed_mean_interval,
    test_accuracies,
)

MESSAGE_SWEEPS = ("messages_soft", "messages_kv", "messages_relay")


def _by_seed(folders: list[Path], name: str) -> dict[int, RunRecord]:
    runs = {}
    for folder in seed_groups(folders).get(name, []):
        run = load_run(folder)
        if run.test_best:
            runs[int(folder.name.rsplit("seed", 1)[1])] = run
    return runs


def _invalid(run: RunRecord, which: str) -> float:
    s = run.test[which]["systems"]["bridged"]
    return s["invalid"] / s["n"]


def format_text(sweeps: dict[str, list[Path]]) -> list[str]:
    """Test invalid rate of prompt_softonly_phase2_swap against format_scaled (the same recipe plus
    format_penalty), seed by seed; empty until a seed has both."""
    if "format_penalty" not in sweeps or "softonly" not in sweeps:
        return []
    without = _by_seed(sweeps["softonly"], "prompt_softonly_phase2_swap")
    with_term = _by_seed(sweeps["format_penalty"], "format_scaled")
    seeds = sorted(set(without) & set(with_term))
    if not seeds:
        return []
    lines = ["# format_penalty: the invalid rate with and without it", "",
             "Command: `benchmarks/outcomes.sh` (the `softonly` and `format_penalty` sweeps), then",
             "`python benchmarks/outcome_tables.py`. `format_scaled` is `prompt_softonly_phase2_swap` plus",
             "`format_penalty` (weight 0.5 x prompt alignment's), nothing else; invalid: the strict filter finds no",
             "`#### N` line in the bridged output, on the 200 test items. Seeds are the units (paired by seed).", "",
             "| seed | weights | invalid, without | invalid, with format_penalty | difference | bridged accuracy, without | with |",
             "|---|---|---|---|---|---|---|"]
    diffs: dict[str, list[float]] = {"best": [], "final": []}
    for seed in seeds:
        for which in ("best", "final"):
            a, b = _invalid(without[seed], which), _invalid(with_term[seed], which)
            diffs[which].append(b - a)
            acc = [RunRecord.accuracy(r.test[which], "bridged") for r in (without[seed], with_term[seed])]
            lines.append(f"| {seed} | {which} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {acc[0]:.3f} | {acc[1]:.3f} |")
    lines.append("")
    for which, d in diffs.items():
        t = paired_t(d) if len(d) > 1 else None
        p_t = "-" if t is None else f"{t['p_value']:.3g}"
        lines.append(f"- {which} weights, {len(d)} paired seed{'s' if len(d) != 1 else ''}: mean difference "
                     f"{statistics.mean(d):+.3f}; exact sign-flip p = {sign_flip_test(d):.3g} (it cannot go below "
                     f"2/2^{len(d)} = {min(1.0, 2 / 2 ** len(d)):.3g}); paired t p = {p_t}")
    return [*lines, ""]


def _latency() -> dict[str, float]:
    path = Path(__file__).resolve().parent / "results" / "latency.json"
    if not path.is_file():
        return {}
    systems = json.loads(path.read_text()).get("systems", {})
    relay = systems.get("text relay", {}).get("batch 1")
    out = {}
    for label, values in systems.items():
        if label.startswith("bridged: ") and relay:
            out[label.split(": ", 1)[1].split(" ")[0]] = values["batch 1"] / relay
    return out


def messages_text(sweeps: dict[str, list[Path]]) -> list[str]:
    """One row per recipe of the message sweeps: accuracy, controls, baselines, bytes, latency."""
    groups = {}
    for sweep in MESSAGE_SWEEPS:
        for name, folders in seed_groups(sweeps.get(sweep, [])).items():
            groups[name] = [load_run(f) for f in folders]
    if not groups:
        return []
    latency = _latency()
    header = ("recipe", "translator", "seeds", "bridged (test: best)", "bridged, seeds+items 95%", "shuffled",
              "bridged − shuffled", "target alone",
              "source alone", "text relay", "message bytes per item", "relay bytes per item",
              "latency vs text relay (batch 1)")
    lines = ["# Message kinds on the tiny pair (arith)", "",
             "Command: `latentbridge sweep answer_softplus --seeds 3 --out runs/sweeps/messages_soft`, the same for",
             "`kv_prefix c2c_fusion` (`messages_kv`) and `latent_relay` (`messages_relay`), then",
             "`python benchmarks/outcome_tables.py`; latency from `python benchmarks/latency.py` (results/latency.md,",
             "batch 1, untrained translators unless stated there). Test accuracy of the dev-chosen weights, mean ± 95%",
             "t interval over seeds (seeds are the units; the test items held fixed); seeds+items 95%: a bootstrap",
             "interval that resamples the seeds and the test items (with 3 seeds its seed part is too narrow: see the",
             "README). shuffled: the message from another item's source states.",
             "answer_softplus and kv_prefix read the question too (`soft_plus_text`), c2c_fusion reads it (its cache is",
             "fused), latent_relay reads only the message and the cue (`soft_only`).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in groups.items():
        done = [r for r in runs if r.test_best]
        if not done:
            continue
        n = len(done)
        kind = done[0].recipe["translator"]["name"]
        flows = [r.test_best["information_flow"]["difference"] for r in done if r.test_best.get("information_flow")]
        sizes = [r.test_best["systems"]["bridged"].get("message_bytes") for r in done]
        relay = [(r.test_best["systems"].get("relay") or {}).get("message_bytes") for r in done]
        ratio = latency.get(name)
        lines.append("| " + " | ".join((
            name, kind, str(n), format_mean_interval(test_accuracies(done, "best"), n), format_seeds_items(done),
            format_mean_interval(test_accuracies(done, "best", "shuffled"), n), format_signed_mean_interval(flows, n),
            f"{RunRecord.accuracy(done[0].test_best, 'target'):.3f}", f"{RunRecord.accuracy(done[0].test_best, 'source'):.3f}",
            f"{RunRecord.accuracy(done[0].test_best, 'relay'):.3f}",
            "-" if None in sizes else f"{statistics.mean(sizes):,.0f}", "-" if None in relay else f"{statistics.mean(relay):,.0f}",
            "-" if ratio is None else f"{ratio:.2f}")) + " |")
    return [*lines, ""]


# --------------------------------------------------------------------------------------------------
# communication goals: does the target gain from the source? (benchmarks/communicate.sh)
# --------------------------------------------------------------------------------------------------

COMMUNICATE_SWEEPS = ("communicate_facts", "communicate_facts_prompt", "communicate_facts_mc", "communicate_softonly",
                      "communicate_arith", "communicate_arith_kv", "communicate_arith_prompt")
COMPARISONS = {  # same channel, one piece changed: no goal of their own
    "communicate_facts_prompt": ("facts", "comparison: facts_relay reading the source's prompt states only"),
    "communicate_arith_kv": ("arith", "comparison: arith_relay with a kv prefix (resampler) for the soft tokens"),
    "communicate_arith_prompt": ("arith", "comparison: arith_relay reading the source's prompt states only"),
}
GOALS = {
    "communicate_facts": ("facts", "bridged >= 0.8 x source alone, and shuffled near target alone (within 0.05)"),
    "communicate_facts_mc": ("facts_mc", "multiple choice (acc, 4 choices): bridged above shuffled at p < 0.05 in every seed"),
    "communicate_arith": ("arith", "bridged - target alone >= +0.05 in every seed, McNemar p < 0.01 in each"),
    "communicate_softonly": ("arith", "soft_only: bridged >= target alone reading the question; and bridged - target "
                             "alone >= +0.05 in every seed, McNemar p < 0.01 in each"),
    **COMPARISONS,
}


def _goal(sweep: str, runs: list[RunRecord]) -> str:
    best = [r.test_best for r in runs]
    bridged = statistics.mean(RunRecord.accuracy(t, "bridged") for t in best)
    target = statistics.mean(RunRecord.accuracy(t, "target") for t in best)
    if sweep == "communicate_facts":
        source = statistics.mean(RunRecord.accuracy(t, "source") for t in best)
        shuffled = statistics.mean(RunRecord.accuracy(t, "shuffled") for t in best)
        per_seed = [RunRecord.accuracy(t, "bridged") >= 0.8 * RunRecord.accuracy(t, "source") for t in best]
        ok = bridged >= 0.8 * source and abs(shuffled - target) <= 0.05
        return (f"{'reached on the mean' if ok else 'not reached'}: {bridged:.3f} vs 0.8 x {source:.3f} = "
                f"{0.8 * source:.3f}, in {sum(per_seed)} of {len(per_seed)} seeds; shuffled − target {shuffled - target:+.3f}")
    if sweep == "communicate_facts_mc":
        flows = [t["information_flow"] for t in best]
        ok = all(f["difference"] > 0 and f["p_value"] < 0.05 for f in flows)
        return (f"{'reached' if ok else 'not reached'}: bridged − shuffled {min(f['difference'] for f in flows):+.3f} at the "
                f"least, largest p {max(f['p_value'] for f in flows):.2g}")
    gains = [RunRecord.accuracy(t, "bridged") - RunRecord.accuracy(t, "target") for t in best]
    ps = [t["mcnemar_bridged_vs_target"]["p_value"] for t in best]
    ok = round(min(gains), 9) >= 0.05 and max(ps) < 0.01  # gains are k/200: 0.575 - 0.525 is 0.04999...
    every_seed = (f"{'reached' if ok else 'not reached'}: smallest gain {min(gains):+.3f}, largest McNemar p "
                  f"{max(ps):.2g}")
    if sweep == "communicate_arith":
        return every_seed
    if sweep in COMPARISONS:
        return f"bridged − target {bridged - target:+.3f} on the mean"
    return f"{'reached' if bridged >= target else 'not reached'}: {bridged:.3f} vs {target:.3f}; {every_seed}"


def _source_answers(run: RunRecord) -> str:
    """In how many test items (of the dev-chosen weights) the bridged answer is the source's own: how well
    the target reads back what the source worked out, right or wrong."""
    best = run.best_step if run.best_step is not None else run.final_step
    name = f"test_best_step_{best}" if best != run.final_step else f"test_step_{run.final_step}"
    path = run.folder / f"eval_samples_{name}.jsonl"
    if not path.is_file():
        return "—"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows or "source_extracted" not in rows[0]:
        return "—"
    return str(sum(r["bridged_extracted"] is not None and r["bridged_extracted"] == r["source_extracted"] for r in rows))


def communicate_text(sweeps: dict[str, list[Path]]) -> list[str]:
    """The communication goals, one row per configuration of the communicate sweeps (the seeds column says how many):
    test accuracy of the dev-chosen weights (mean ± 95% t over seeds), the controls, per-seed gains."""
    rows = []
    for sweep in COMMUNICATE_SWEEPS:
        task, goal = GOALS[sweep]
        for name, folders in seed_groups(sweeps.get(sweep, [])).items():
            runs = [r for r in (load_run(f) for f in folders) if r.test_best]
            if not runs:
                continue
            n = len(runs)
            recipe = runs[0].recipe
            view = (recipe.get("source") or {}).get("view", "prompt")
            injection = recipe["injection"]["name"] if isinstance(recipe["injection"], dict) else recipe["injection"]
            flows = [r.test_best["information_flow"]["difference"] for r in runs]
            gains = ", ".join(f"{RunRecord.accuracy(r.test_best, 'bridged') - RunRecord.accuracy(r.test_best, 'target'):+.3f}"
                              f" (p {r.test_best['mcnemar_bridged_vs_target']['p_value']:.1g})" for r in runs)
            size = statistics.mean(r.test_best["systems"]["bridged"].get("message_bytes") or 0 for r in runs)
            rows.append("| " + " | ".join((
                goal, task, f"`{name}`", f"{recipe['translator']['name']}, {injection}, view {view}", str(n),
                format_mean_interval(test_accuracies(runs, "best"), n), format_seeds_items(runs),
                format_mean_interval(test_accuracies(runs, "best", "shuffled"), n), format_signed_mean_interval(flows, n),
                f"{RunRecord.accuracy(runs[0].test_best, 'target'):.3f}", f"{RunRecord.accuracy(runs[0].test_best, 'source'):.3f}",
                f"{RunRecord.accuracy(runs[0].test_best, 'relay'):.3f}", gains,
                ", ".join(_source_answers(r) for r in runs), f"{size:,.0f}", _goal(sweep, runs))) + " |")
    if not rows:
        return []
    header = ("goal", "task", "recipe", "translator, injection, source view", "seeds", "bridged (test: best)",
              "bridged, seeds+items 95%", "shuffled",
              "bridged − shuffled", "target alone", "source alone", "text relay", "bridged − target per seed (McNemar p)",
              "bridged answer = the source's, per seed (of 200)",
              "message bytes", "verdict")
    return ["# Communication on the tiny pair: does the target gain from the source?", "",
            "Command: `benchmarks/communicate.sh` (resumable sweeps: 5 seeds each, facts_mc and the comparisons 3), then",
            "`python benchmarks/outcome_tables.py`. Test accuracy (200 items) of the weights chosen on 200 dev items,",
            "mean ± 95% t interval over seeds (seeds are the units; the test items held fixed); seeds+items 95%: a",
            "bootstrap interval that resamples the seeds and the test items (with few seeds its seed part is too narrow:",
            "see the README). facts: train, dev and test are disjoint by entity;",
            "the source learned every entity, the target none. shuffled: the message from another item's source states.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""]
