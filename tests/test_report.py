"""Reports, sweeps and the run index: every number in the report comes from the run folders.

Selection reads dev: the experiment table quotes the dev peak (step) that chose best/, and test
accuracy of those weights and of the final weights; comparisons over seeds take the seed as the unit.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import pytest
import yaml
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.stats import hierarchical_bootstrap, sign_flip_exact
from latentbridge.io.rundir import claim, new_run_dir, read_index
from latentbridge.report.document import write_report
from latentbridge.report.runs import load_run
from latentbridge.report.seeds import paired_differences, paired_over_seeds
from latentbridge.report.tables import EXPERIMENT_HEADER
from latentbridge.train.sweep import parse_grid, plan, split_values

from .helpers import recipe_dict
from .test_report_builder import counts, make_old_run, make_run, table_rows

cli = CliRunner()
T2 = 4.302652729911275  # the 97.5% quantile of Student's t with 2 degrees of freedom

FULL = {"name": "phase1_full", "objectives": {"kl": {"weight": 1.0}, "prompt_alignment": {"weight": 0.5}},
        "train": {"steps": 200}}
ABLATED = {"name": "ablB_kl_only", "objectives": {"kl": {"weight": 1.0}}, "train": {"steps": 200}}


@pytest.fixture
def fixture_runs(tmp_path):
    """Three seeds of two configurations. Test accuracy, best weights: phase1_full 0.7, 0.8, 0.8;
    ablB_kl_only 0.5, 0.5, 0.4. Final weights: 0.6, 0.7, 0.8 and 0.4, 0.5, 0.3."""
    groups = {
        "phase1_full": [
            make_run(tmp_path, "phase1_full", FULL, 0, {100: 7, 200: 6}, final=6, best=7),
            make_run(tmp_path, "phase1_full", FULL, 1, {100: 6, 200: 6}, final=7, best=8),  # a tie: the earliest
            make_run(tmp_path, "phase1_full", FULL, 2, {100: 5, 200: 8}, final=8)],  # best is final
        "ablB_kl_only": [
            make_run(tmp_path, "ablB_kl_only", ABLATED, 0, {100: 5, 200: 4}, final=4, best=5, collapse=("final",)),
            make_run(tmp_path, "ablB_kl_only", ABLATED, 1, {100: 3, 200: 5}, final=5),
            make_run(tmp_path, "ablB_kl_only", ABLATED, 2, {100: 4, 200: 4}, final=3, best=counts(4, shuffled=4))],
    }
    return tmp_path, groups


def half_width(values):
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return T2 * sd / math.sqrt(len(values))


def test_the_experiment_table_quotes_dev_selection_and_test(fixture_runs):
    root, groups = fixture_runs
    folders = [f for fs in groups.values() for f in fs]
    text = write_report(folders, root / "out", groups={k: list(v) for k, v in groups.items()}).read_text()
    header = text.split("## Experiment table\n\n")[1].splitlines()[0]
    assert header == "| " + " | ".join(EXPERIMENT_HEADER) + " |"
    rows = {r[0].strip("`"): dict(zip(EXPERIMENT_HEADER[1:], r[1:], strict=True)) for r in table_rows(text, "Experiment table")}
    assert list(rows["phase1_full-seed0"].values()) == [
        "phase1_full", "with obj.prompt_alignment", "0", "0.700 (100)", "0.700", "0.600 (200)", "0.500", "0.800",
        "0.600", "0.100", "0.000", "+0.600, p = 0.0312", "0", "no information from the source (final)",
        "phase1_full0b bridged 0 #### 10"]
    assert rows["phase1_full-seed1"]["dev peak (step)"] == "0.600 (100)"  # a tie keeps the earliest, as the runner
    assert rows["phase1_full-seed1"]["test: best"] == "0.800" and rows["phase1_full-seed1"]["flags"] == "-"
    # the best step is the final step: both test columns are the one evaluation
    seed2 = rows["phase1_full-seed2"]
    assert (seed2["dev peak (step)"], seed2["test: best"], seed2["test: final (step)"]) == ("0.800 (200)", "0.800", "0.800 (200)")
    assert seed2["sample bridged output"] == "phase1_full2 bridged 0 #### 10"
    abl0 = rows["ablB_kl_only-seed0"]
    assert abl0["settings"] == "no obj.prompt_alignment"
    assert abl0["flags"] == "no information from the source; collapse (final)"
    assert abl0["bridged − shuffled, p"] == "+0.400, p = 0.125"  # 4 discordant items, all for bridged: 2/16
    assert rows["ablB_kl_only-seed2"]["shuffled"] == "0.400"
    assert rows["ablB_kl_only-seed2"]["bridged − shuffled, p"] == "+0.000, p = 1"
    for folder in folders:
        assert (root / "out" / "curves" / f"{folder.name}.png").stat().st_size > 1000
        assert f"![{folder.name}](curves/{folder.name}.png)" in text


def test_over_seeds_the_seed_is_the_unit(fixture_runs):
    root, groups = fixture_runs
    folders = [f for fs in groups.values() for f in fs]
    text = write_report(folders, root / "out", groups={k: list(v) for k, v in groups.items()}).read_text()
    group = {r[0]: r for r in table_rows(text, "Over seeds")}
    assert group["phase1_full"][1:3] == ["3", f"0.767 ± {half_width([0.7, 0.8, 0.8]):.3f}"]
    assert group["phase1_full"][4:6] == [f"0.700 ± {half_width([0.6, 0.7, 0.8]):.3f}", f"0.700 ± {half_width([0.7, 0.6, 0.8]):.3f}"]
    assert group["phase1_full"][5] == "0.700 ± 0.248"  # dev peaks 0.7, 0.6, 0.8
    # beside test: best, seeds and items resampled: the seeds' 10 items each (the first k right), crossed
    low, high = hierarchical_bootstrap([[int(i < k) for i in range(10)] for k in (7, 8, 8)])[1:]
    assert group["phase1_full"][3] == f"[{low:.3f}, {high:.3f}]" and high - low > 2 * half_width([0.7, 0.8, 0.8])
    assert group["ablB_kl_only"][2] == f"0.467 ± {half_width([0.5, 0.5, 0.4]):.3f}"
    assert group["ablB_kl_only"][9:] == ["1/3", "3/3"]  # collapsed runs, no-information runs
    assert group["phase1_full"][9:] == ["0/3", "1/3"]  # seed 0's final weights read nothing from the source

    paired = {(r[0], r[1]): r[2:] for r in table_rows(text, "Paired over seeds")}
    # best weights, per seed: 0.5 - 0.7, 0.5 - 0.8, 0.4 - 0.8 = -0.2, -0.3, -0.4
    low, high = -0.3 - T2 * 0.1 / math.sqrt(3), -0.3 + T2 * 0.1 / math.sqrt(3)
    t = -0.3 / (0.1 / math.sqrt(3))
    p_t = 1 - abs(t) / math.sqrt(2 + t * t)  # df = 2: P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    assert paired[("ablB_kl_only", "best")][:3] == ["3", "-0.300", f"[{low:+.3f}, {high:+.3f}]"]
    assert paired[("ablB_kl_only", "best")][4:] == ["0.25", f"{p_t:.3g}"]
    # seeds+items: per seed and item, ablB_kl_only's answer minus phase1_full's (seeds 0, 1, 2 in the two orders)
    items = [[int(i < b) - int(i < a) for i in range(10)] for a, b in ((7, 5), (8, 5), (8, 4))]
    both = hierarchical_bootstrap(items)[1:]
    assert paired[("ablB_kl_only", "best")][3] == f"[{both[0]:+.3f}, {both[1]:+.3f}]"
    # final weights: -0.2, -0.2, -0.5
    sd = math.sqrt(((0.1) ** 2 * 2 + 0.2**2) / 2)
    t = -0.3 / (sd / math.sqrt(3))
    assert paired[("ablB_kl_only", "final")][:2] == ["3", "-0.300"]
    assert paired[("ablB_kl_only", "final")][4:] == ["0.25", f"{1 - abs(t) / math.sqrt(2 + t * t):.3g}"]
    assert "(3 paired seeds: 2/2^3 = 0.25)" in text


def test_the_no_information_count_takes_any_weights(fixture_runs):
    root, groups = fixture_runs
    text = write_report(groups["phase1_full"][:1], root / "out", groups={"p": groups["phase1_full"][:1]}).read_text()
    assert table_rows(text, "Over seeds")[0][-1] == "1/1"  # seed 0's final weights read nothing from the source
    assert "## Paired over seeds" not in text  # one configuration: nothing to compare


def test_the_dev_choice_is_quoted_even_when_the_final_weights_test_better(tmp_path):
    """Never a test peak: dev chose step 100, whose weights score 0.6 on test; the final weights score
    0.8 there. test: best is 0.6, and the over-seeds means and the paired test use 0.6 too."""
    chosen = make_run(tmp_path, "a", {"name": "a"}, 0, {100: 7, 200: 5}, final=8, best=6)
    other = make_run(tmp_path, "b", {"name": "b"}, 0, {100: 7}, final=7)
    text = write_report([chosen, other], tmp_path / "out", groups={"a": [chosen], "b": [other]}).read_text()
    row = dict(zip(EXPERIMENT_HEADER, table_rows(text, "Experiment table")[0], strict=True))
    assert (row["dev peak (step)"], row["test: best"], row["test: final (step)"]) == ("0.700 (100)", "0.600", "0.800 (200)")
    assert table_rows(text, "Over seeds")[0][2:5] == ["0.600", "-", "0.800"]  # one seed: no interval
    assert table_rows(text, "Paired over seeds")[0][:4] == ["b", "best", "1", "+0.100"]  # 0.7 - 0.6, not 0.7 - 0.8


def test_pooling_items_over_seeds_is_not_the_test(tmp_path):
    """Three seeds, each 0.9 against 0.1: summing each item's answers over the seeds and taking the
    8 differing items as units gives p = 2/2^8; with the seed as the unit it cannot go below 2/2^3."""
    a = [load_run(make_run(tmp_path, "a", {"name": "a"}, s, {100: 9}, final=9)) for s in range(3)]
    b = [load_run(make_run(tmp_path, "b", {"name": "b"}, s, {100: 1}, final=1)) for s in (2, 0, 1)]  # another order
    pooled = [3 * (int(i < 1) - int(i < 9)) for i in range(10)]
    assert sign_flip_exact(pooled) == 2 / 2**8  # what an items-pooled test would say
    test = paired_over_seeds(b, a)
    assert test["sign_flip_p"] == 0.25 == test["smallest_p"]
    assert test["n"] == 3 and test["mean"] == pytest.approx(-0.8)
    assert test["t_p"] == 0.0 and test["low"] == test["high"] == pytest.approx(-0.8)  # no spread over seeds
    text = write_report([r.folder for r in a + b], tmp_path / "out", groups={"a": [r.folder for r in a],
                                                                            "b": [r.folder for r in b]}).read_text()
    assert table_rows(text, "Paired over seeds")[0][6] == "0.25"


def test_pairs_are_by_seed_and_only_shared_seeds_count(tmp_path):
    a = [load_run(make_run(tmp_path, "a", {"name": "a"}, s, {100: k}, final=k)) for s, k in ((0, 5), (1, 6), (2, 7))]
    b = [load_run(make_run(tmp_path, "b", {"name": "b"}, s, {100: k}, final=k)) for s, k in ((3, 9), (1, 8), (0, 8))]
    assert paired_differences(b, a) == [(1, Fraction(1, 5)), (0, Fraction(3, 10))]
    test = paired_over_seeds(b, a, "final")
    assert test["n"] == 2 and test["sign_flip_p"] == 0.5 and test["mean"] == pytest.approx(0.25)
    # a run not tested yet has no test accuracy to pair
    c = [load_run(make_run(tmp_path, "c", {"name": "c"}, 0, {100: 2}))]
    assert paired_over_seeds(c, a) is None


def test_a_run_not_tested_yet_and_an_old_run_folder(tmp_path):
    running = make_run(tmp_path, "r", {"name": "r"}, 0, {100: 4, 200: 6}, status="running")
    text = write_report([running], tmp_path / "out").read_text()
    row = dict(zip(EXPERIMENT_HEADER, table_rows(text, "Experiment table")[0], strict=True))
    assert row["dev peak (step)"] == "0.600 (200)"
    assert row["test: best"] == row["test: final (step)"] == row["shuffled"] == "-"
    assert row["flags"] == "no test evaluation (status running)"
    old = make_old_run(tmp_path)
    with pytest.raises(LatentBridgeError, match="older latentbridge.*read the test split.*not reported"):
        load_run(old)
    result = cli.invoke(app, ["report", str(old), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "chose best/ on it" in result.stderr


def test_report_cli_and_bad_folders(fixture_runs, tmp_path):
    root, groups = fixture_runs
    result = cli.invoke(app, ["report", str(groups["phase1_full"][0]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.md").is_file()
    bad = cli.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "is not a run folder" in bad.stderr


def test_report_of_a_folder_of_runs_groups_them_over_seeds(fixture_runs, tmp_path):
    root, groups = fixture_runs
    (root / "not_a_run").mkdir()
    result = cli.invoke(app, ["report", str(root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert text.count("![") == 6 and "6 runs" in text
    over_seeds = {row[0]: row for row in table_rows(text, "Over seeds")}
    assert set(over_seeds) == {"phase1_full", "ablB_kl_only"}
    assert over_seeds["phase1_full"][1] == "3"


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
