"""Reports, sweeps and the run index: every number in the report comes from the run folders."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.stats import sign_flip_exact
from latentbridge.io.rundir import claim, new_run_dir, read_index
from latentbridge.report.document import write_report
from latentbridge.report.seeds import mean_interval
from latentbridge.train.sweep import parse_grid, plan, split_values

from .helpers import recipe_dict

cli = CliRunner()
ITEMS = 10


def system(acc, n=ITEMS, invalid=0, collapsed=False, distinct=5):
    return {"n": n, "correct": round(acc * n), "accuracy": acc, "ci95": [0.0, 1.0], "invalid": invalid,
            "gold_match": round(acc * n), "distinct": distinct, "top_answer": "1", "top_share": 0.2,
            "collapsed": collapsed, "echo_rate": 0.0, "sample": "x"}


def make_run(root, name, recipe, seed, bridged, finals, correct, collapsed=False):
    """A run folder written by hand: evaluations at steps 100 and 200 with the given bridged
    accuracies, final source/target/relay accuracies, and per-item bridged correctness."""
    folder = root / f"{name}-seed{seed}"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "seed": seed}))
    evaluations = []
    for step, acc in zip((100, 200), bridged, strict=True):
        evaluations.append({"step": step, "n_items": ITEMS, "systems": {
            "bridged": system(acc, invalid=3 if step == 200 else 1, collapsed=collapsed and step == 200),
            "source": system(finals[0]), "target": system(finals[1]), "relay": system(finals[2])},
            "mcnemar_bridged_vs_target": None})
    (folder / "summary.json").write_text(json.dumps({"evaluations": evaluations}))
    (folder / "run.json").write_text(json.dumps({"status": "finished"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "loss/kl": 0.5 / s}) + "\n"
                                                   for s in (50, 100, 150, 200)))
    records = [{"eval_step": 200, "index": i, "id": f"q{i}", "question": f"question {i}",
                "bridged_full": f"answer of {name} {i}\n#### {i}", "bridged_correct": c} for i, c in enumerate(correct)]
    (folder / "eval_samples_step_200.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def fixture_runs(tmp_path):
    full = {"name": "phase1_full", "objectives": {"kl": {"weight": 1.0}, "prompt_alignment": {"weight": 0.5}},
            "train": {"steps": 200}}
    ablated = {"name": "ablB_kl_only", "objectives": {"kl": {"weight": 1.0}}, "train": {"steps": 200}}
    correct_full = [[True] * 7 + [False] * 3, [True] * 6 + [False] * 4]
    correct_abl = [[True] * 4 + [False] * 6, [False] + [True] * 5 + [False] * 4]
    groups = {
        "phase1_full": [make_run(tmp_path, "phase1_full", full, 0, (0.8, 0.7), (0.5, 0.8, 0.6), correct_full[0]),
                        make_run(tmp_path, "phase1_full", full, 1, (0.6, 0.6), (0.5, 0.8, 0.6), correct_full[1])],
        "ablB_kl_only": [make_run(tmp_path, "ablB_kl_only", ablated, 0, (0.5, 0.4), (0.5, 0.8, 0.6), correct_abl[0],
                                  collapsed=True),
                         make_run(tmp_path, "ablB_kl_only", ablated, 1, (0.3, 0.5), (0.5, 0.8, 0.6), correct_abl[1])],
    }
    return tmp_path, groups, correct_full, correct_abl


def table_rows(text, heading):
    section = text.split(f"## {heading}")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_report_numbers_match_the_run_folders(fixture_runs):
    root, groups, correct_full, correct_abl = fixture_runs
    folders = [f for fs in groups.values() for f in fs]
    report = write_report(folders, root / "out", groups={k: list(v) for k, v in groups.items()})
    text = report.read_text()

    rows = {r[0].strip("`"): r for r in table_rows(text, "Experiment table")}
    assert rows["phase1_full-seed0"][1:] == ["phase1_full", "with obj.prompt_alignment", "0",
                                            "0.800 (100) → 0.700", "0.500", "0.800", "0.600", "3", "no",
                                            "answer of phase1_full 0 #### 0"]
    assert rows["phase1_full-seed1"][4] == "0.600 (100) → 0.600"  # a tie keeps the earliest peak
    assert rows["ablB_kl_only-seed0"][2] == "no obj.prompt_alignment"
    assert rows["ablB_kl_only-seed0"][4] == "0.500 (100) → 0.400" and rows["ablB_kl_only-seed0"][9] == "yes"
    assert rows["ablB_kl_only-seed1"][4] == "0.500 (200) → 0.500"

    group = {r[0]: r for r in table_rows(text, "Over seeds")}
    mean, half = mean_interval([0.7, 0.6])
    assert group["phase1_full"][2] == f"{mean:.3f} ± {half:.3f}"
    assert math.isclose(half, 12.706 * math.sqrt(0.005) / math.sqrt(2), rel_tol=1e-9)
    assert group["ablB_kl_only"][2] == "0.450 ± 0.635"  # mean 0.45, t(1) * sd / sqrt(2) = 12.706 * 0.0707 / 1.414
    assert group["ablB_kl_only"][5] == "1/2"
    # per item, ablB minus phase1_full correct answers summed over seeds 0 and 1
    differences = [int(a0) - int(f0) + int(a1) - int(f1) for a0, f0, a1, f1 in
                   zip(correct_abl[0], correct_full[0], correct_abl[1], correct_full[1], strict=True)]
    assert differences == [-1, 0, 0, 0, -1, -1, -1, 0, 0, 0]
    # four items differ, all against ablB: 2 of the 16 sign patterns are as extreme
    assert sign_flip_exact(differences) == 0.125
    assert group["ablB_kl_only"][6] == "-0.200, p = 0.125"  # (0.4 + 0.5) / 2 - (0.7 + 0.6) / 2
    assert group["phase1_full"][6] == "-"

    diff = {r[0].strip("`"): r[1:] for r in table_rows(text, "Differences")}
    assert set(diff) == {"name", "seed", "objectives.prompt_alignment"}
    assert diff["objectives.prompt_alignment"] == ['`{"weight": 0.5}`'] * 2 + ["absent"] * 2
    for folder in folders:
        assert (root / "out" / "curves" / f"{folder.name}.png").stat().st_size > 1000
        assert f"![{folder.name}](curves/{folder.name}.png)" in text


def test_report_cli_and_bad_folders(fixture_runs, tmp_path):
    root, groups, *_ = fixture_runs
    result = cli.invoke(app, ["report", str(groups["phase1_full"][0]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.md").is_file()
    bad = cli.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "is not a run folder" in bad.stderr


def test_report_of_a_folder_of_runs_groups_them_over_seeds(fixture_runs, tmp_path):
    root, groups, *_ = fixture_runs
    (root / "not_a_run").mkdir()
    result = cli.invoke(app, ["report", str(root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert text.count("![") == 4 and "4 runs" in text
    over_seeds = {row[0]: row for row in table_rows(text, "Over seeds")}
    assert set(over_seeds) == {"phase1_full", "ablB_kl_only"}
    assert over_seeds["phase1_full"][1] == "2"


def test_grid_parsing_and_plan():
    assert split_values("linear,{name: dit, k: 4},[1, 2]") == ["linear", "{name: dit, k: 4}", "[1, 2]"]
    assert parse_grid("train.lr=1e-3,1e-4") == ("train.lr", ["1e-3", "1e-4"])
    with pytest.raises(LatentBridgeError, match="expected key=value1,value2"):
        parse_grid("train.lr")
    runs = plan(["a"], ["x=1,2", "y=3"], seeds=2)
    assert [(c.name, s) for c, s in runs] == [("x=1 y=3", 0), ("x=1 y=3", 1), ("x=2 y=3", 0), ("x=2 y=3", 1)]
    two = plan(["a", "b"], [], seeds=1)
    assert [c.name for c, _ in two] == ["a", "b"]


def test_run_ids_do_not_collide(tmp_path):
    ids = {new_run_dir("x", tmp_path).name for _ in range(200)}
    assert len(ids) == 200
    claim(tmp_path / "run", {"status": "running"})
    with pytest.raises(LatentBridgeError, match="already holds a run"):
        claim(tmp_path / "run", {"status": "running"})


def test_sweep_runs_skips_and_reports(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    base = recipe_dict(random_pair, "train.steps=2", "eval.every=1", "eval.n=3", "eval.max_new_tokens=3",
                       "train.log_every=1")
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({**base, "name": "full",
                                                       "objectives": {"nll": {"weight": 1.0}, "kl": {"weight": 0.5}}}))
    (tmp_path / "kl_only.yaml").write_text(yaml.safe_dump({**base, "name": "kl_only", "objectives": {"kl": {"weight": 1.0}}}))
    out = tmp_path / "sweep"
    args = ["sweep", str(tmp_path / "full.yaml"), str(tmp_path / "kl_only.yaml"), "--seeds", "2", "--out", str(out)]
    first = cli.invoke(app, args)
    assert first.exit_code == 0, first.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "report")
    assert folders == ["full-seed0", "full-seed1", "kl_only-seed0", "kl_only-seed1"]
    seeds = {f: yaml.safe_load((out / f / "recipe.yaml").read_text())["seed"] for f in folders}
    assert seeds == {"full-seed0": 0, "full-seed1": 1, "kl_only-seed0": 0, "kl_only-seed1": 1}
    text = (out / "report" / "report.md").read_text()
    assert "| full | 2 |" in text and "| kl_only | 2 |" in text
    index = read_index(out)
    assert {r["status"] for r in index.values()} == {"finished"} and len(index) == 4
    again = cli.invoke(app, args)
    assert again.exit_code == 0
    assert again.output.count("finished before, skipped") == 4
    listed = cli.invoke(app, ["runs", str(out), "--json"])
    assert len(json.loads(listed.stdout)) == 4
    assert re.search(r"final.*step", json.dumps(json.loads(listed.stdout)[0]))
