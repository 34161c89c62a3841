"""Every published number traceable: benchmarks/outcome_tables.py regenerates each table byte for byte
from the runs kept under results/runs/ (packed run folders: no checkpoints or weights).

The fixture tests/data/report/results/ is a small results folder in that layout: fake sweeps of the
outcomes.sh names, packed, and the tables outcome_tables.py wrote from them. After a deliberate change
of the tables, rebuild it with ``python -m tests.test_report_outcomes`` (from the repository root).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from latentbridge.errors import LatentBridgeError
from latentbridge.report.archive import (
    EVAL_ARCHIVE,
    KEPT_FILES,
    pack_run,
    pack_sweep,
    read_eval_archive,
    unpack_runs,
    verify_run,
)
from latentbridge.report.runs import load_run

from .test_report_builder import counts, make_old_run, make_run

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "data" / "report" / "results"


def outcome_tables():
    spec = importlib.util.spec_from_file_location("outcome_tables", ROOT / "benchmarks" / "outcome_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ALLOW_UNVERIFIED = ("*",)  # the fixture's fake runs record no commit (provenance: tests/test_provenance.py)
    return module


def recipe(name, translator, steps=300):
    return {"name": name, "translator": translator, "objectives": {"kl": {"weight": 1.0}},
            "train": {"steps": steps}, "eval": {"n": 10, "dev_n": 10}}


def build_sweeps(root: Path) -> Path:
    """Fake sweep folders as benchmarks/outcomes.sh leaves them (three of its five sweeps)."""
    dit = {"name": "dit", "k": 8}
    seed_table, softonly, softplus = root / "seed_table", root / "softonly", root / "translators_softplus"
    make_run(seed_table, "phase1_full", recipe("phase1_full", dit), 0, {100: 7, 200: 6, 300: 7}, final=7, best=8)
    make_run(seed_table, "phase1_full", recipe("phase1_full", dit), 1, {100: 6, 200: 8, 300: 7}, final=6, best=8)
    make_run(seed_table, "ablB_kl_only", recipe("ablB_kl_only", dit), 0, {100: 5, 200: 6, 300: 6}, final=5, best=6)
    make_run(seed_table, "ablB_kl_only", recipe("ablB_kl_only", dit), 1, {100: 4, 200: 4, 300: 5}, final=5)
    phase2 = recipe("prompt_softonly_phase2_swap", dit, 1000)
    contrastive = recipe("contrastive_softonly", dit, 1000)
    make_run(softonly, "prompt_softonly_phase2_swap", phase2, 0, {500: 3, 1000: 4}, final=4, speed=40.0)
    make_run(softonly, "prompt_softonly_phase2_swap", phase2, 1, {500: 4, 1000: 3}, final=2, best=3, speed=42.0)
    make_run(softonly, "contrastive_softonly", contrastive, 0, {500: 2, 1000: 2}, final=2, best=counts(1, shuffled=1),
             collapse=("final",), speed=38.0)
    make_run(softonly, "contrastive_softonly", contrastive, 1, {500: 3, 1000: 1}, final=1, best=2, speed=39.0)
    make_run(softplus, "translator-linear", recipe("answer_softplus", {"name": "linear", "k": 8}), 0, {100: 6, 200: 7},
             final=7, speed=120.0, parameters=4104)
    make_run(softplus, "translator-identity", recipe("answer_softplus", {"name": "identity", "projection": "linear"}),
             0, {100: 5, 200: 5}, final=5, best=5, speed=150.0, parameters=1056)
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (by relative path), an evaluation archive as its members."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = str(path.relative_to(folder))
        if path.name == EVAL_ARCHIVE:
            out.update({f"{relative}/{k}": v for k, v in read_eval_archive(path).items()})
        else:
            out[relative] = path.read_bytes()
    return out


def test_a_pack_keeps_what_the_tables_read_and_nothing_else(tmp_path):
    run = make_run(tmp_path / "sweep", "a", recipe("a", {"name": "linear"}), 0, {100: 6, 200: 5}, final=5, best=6, speed=9.0)
    (tmp_path / "sweep" / "report").mkdir()  # a sweep's report folder is not a run
    (tmp_path / "sweep" / "index.jsonl").write_text("{}\n")
    packed = pack_sweep(tmp_path / "sweep", tmp_path / "results" / "sweep")
    assert [p.name for p in packed] == ["a-seed0"]
    assert sorted(p.name for p in packed[0].iterdir()) == sorted([*KEPT_FILES, EVAL_ARCHIVE])
    for name in KEPT_FILES:
        assert (packed[0] / name).read_bytes() == (run / name).read_bytes()
    evals = sorted(run.glob("eval_samples_*.jsonl"))
    assert read_eval_archive(packed[0] / EVAL_ARCHIVE) == {p.name: p.read_bytes() for p in evals}
    with tarfile.open(packed[0] / EVAL_ARCHIVE) as tar:  # no times, owners or odd modes
        assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in tar.getmembers()} == {(0, 0, 0, "", 0o644)}
    first = (packed[0] / EVAL_ARCHIVE).read_bytes()
    pack_sweep(tmp_path / "sweep", tmp_path / "results" / "sweep")  # again: the same bytes
    assert (packed[0] / EVAL_ARCHIVE).read_bytes() == first
    rebuilt = unpack_runs(tmp_path / "results", tmp_path / "rebuilt")
    assert rebuilt == {"sweep": [tmp_path / "rebuilt" / "sweep" / "a-seed0"]}
    assert files_of(rebuilt["sweep"][0]) == {p.name: p.read_bytes() for p in [*evals, *(run / n for n in KEPT_FILES)]}


def test_unpacked_runs_read_like_the_originals(tmp_path):
    sweeps = build_sweeps(tmp_path / "sweeps")
    for sweep in ("seed_table", "softonly"):
        pack_sweep(sweeps / sweep, tmp_path / "results" / sweep)
    rebuilt = unpack_runs(tmp_path / "results", tmp_path / "rebuilt")
    assert sorted(rebuilt) == ["seed_table", "softonly"]
    for folder in rebuilt["softonly"]:
        original = load_run(sweeps / "softonly" / folder.name)
        again = load_run(folder)
        assert (again.evaluations, again.test, again.best_step, again.metrics) == (
            original.evaluations, original.test, original.best_step, original.metrics)
        assert verify_run(folder) == []
        assert not (folder / "checkpoints").exists() and not (folder / "best").exists()


def test_packing_refuses_old_and_unfinished_runs_and_foreign_folders(tmp_path):
    with pytest.raises(LatentBridgeError, match="older latentbridge"):
        pack_run(make_old_run(tmp_path / "s"), tmp_path / "p" / "old")
    running = make_run(tmp_path / "t", "r", {"name": "r"}, 0, {100: 3}, status="running")
    with pytest.raises(LatentBridgeError, match="the run is running"):
        pack_run(running, tmp_path / "p" / "r")
    make_run(tmp_path / "u", "x", {"name": "x"}, 0, {100: 3}, final=3)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "notes.txt").write_text("mine")
    with pytest.raises(LatentBridgeError, match="holds more than packed runs"):
        pack_sweep(tmp_path / "u", tmp_path / "dest")
    assert (tmp_path / "dest" / "notes.txt").is_file()


def test_a_summary_the_items_do_not_give_is_an_error(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "results")
    run = tmp_path / "results" / "runs" / "softonly" / "contrastive_softonly-seed1"
    summary = json.loads((run / "summary.json").read_text())
    summary["test"]["best"]["systems"]["bridged"]["correct"] += 1  # a published figure no item file backs
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(LatentBridgeError, match="contrastive_softonly-seed1: eval_samples_test_best_step_500.jsonl does not give"):
        outcome_tables().write_tables(tmp_path / "results", tmp_path / "out", log=lambda _: None)
    (run / EVAL_ARCHIVE).unlink()
    unpacked = unpack_runs(tmp_path / "results" / "runs", tmp_path / "rebuilt")
    folder = next(f for f in unpacked["softonly"] if f.name == run.name)
    assert f"{run.name}: eval_samples_dev_step_500.jsonl is missing" in verify_run(folder)


def test_every_published_table_regenerates_byte_for_byte(tmp_path):
    tables = outcome_tables()
    assert tables.check(FIXTURE, log=lambda _: None) == []
    assert tables.main(["check", "--results", str(FIXTURE)]) == 0
    a = tables.write_tables(FIXTURE, tmp_path / "a", log=lambda _: None)
    tables.write_tables(FIXTURE, tmp_path / "b", log=lambda _: None)
    assert [p.relative_to(tmp_path / "a") for p in a] == [Path("seed_table/report.md"), Path("softonly.md"),
                                                          Path("translators.md")]
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")  # the curves too, on one machine
    assert sorted(files_of(tmp_path / "a")) == [
        *(f"seed_table/curves/{n}-seed{s}.png" for n in ("ablB_kl_only", "phase1_full") for s in (0, 1)),
        "seed_table/report.md", "softonly.md", "translators.md"]


def test_check_reports_a_changed_or_orphaned_table(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "results")
    tables = outcome_tables()
    softonly = tmp_path / "results" / "softonly.md"
    text = softonly.read_text()
    softonly.write_text(text.replace("| contrastive_softonly | best | 2 | -0.200 |", "| contrastive_softonly | best | 2 | -0.300 |"))
    assert softonly.read_text() != text
    assert tables.check(tmp_path / "results", log=lambda _: None) == ["softonly.md"]
    shutil.rmtree(tmp_path / "results" / "runs" / "translators_softplus")  # a table the kept runs no longer give
    assert tables.check(tmp_path / "results", log=lambda _: None) == ["softonly.md", "translators.md"]
    assert tables.main(["check", "--results", str(tmp_path / "results")]) == 1


def test_the_fixture_is_what_packing_the_sweeps_gives(tmp_path):
    """Pack the fake sweeps and write the tables: exactly the stored fixture (the runs' files, the
    evaluation archives' members, the tables)."""
    tables = outcome_tables()
    sweeps = build_sweeps(tmp_path / "sweeps")
    assert tables.pack(sweeps, tmp_path / "results", log=lambda _: None) == ["seed_table", "translators_softplus", "softonly"]
    tables.write_tables(tmp_path / "results", log=lambda _: None)
    shutil.rmtree(tmp_path / "results" / "seed_table" / "curves")
    assert files_of(tmp_path / "results") == files_of(FIXTURE)


def test_the_tables_quote_dev_selection_test_and_seed_level_tests():
    softonly = (FIXTURE / "softonly.md").read_text()
    assert "| recipe | seeds | test: best, mean ± 95% | test: best, seeds+items 95% | test: final, mean ± 95% |" in softonly
    rows = [line for line in softonly.splitlines() if line.startswith("| contrastive_softonly |")]
    assert len(rows) == 3  # the seeds table, and the paired table's best and final rows
    assert rows[0].split(" | ")[-1] == "collapse 1/2; no information 2/2 |"
    # per seed, best weights: 0.1 - 0.4 and 0.2 - 0.3; final weights: 0.2 - 0.4 and 0.1 - 0.2
    assert rows[1].startswith("| contrastive_softonly | best | 2 | -0.200 | [")
    assert rows[1].endswith(" | 0.5 | 0.295 |")  # sign-flip: 2 of 4 patterns; t = -2 on 1 df: 1 - 2 atan(2) / pi
    assert rows[2].startswith("| contrastive_softonly | final | 2 | -0.150 | [")
    assert "(2 paired seeds: 2/2^2 = 0.5)" in softonly
    translators = (FIXTURE / "translators.md").read_text()
    assert "| answer teacher, soft_plus_text | identity (linear projection) | 1,056 | 1 | 0.500 | - | 0.500 |" in translators
    assert "| prompt teacher, soft_only | dit | 1,234 | 2 |" in translators  # the softonly sweep's baseline
    assert "| 120.0 |" in translators and "| 41.0 |" in translators  # medians per run (119, 120, 125), then over seeds
    report = (FIXTURE / "seed_table" / "report.md").read_text()
    assert "read from the run folders in `benchmarks/results/runs/seed_table/`" in report
    assert report.index("`phase1_full-seed0`") < report.index("`ablB_kl_only-seed0`")  # against phase 1


def rebuild_fixture() -> None:
    import tempfile

    tables = outcome_tables()
    with tempfile.TemporaryDirectory() as tmp:
        sweeps = build_sweeps(Path(tmp) / "sweeps")
        shutil.rmtree(FIXTURE, ignore_errors=True)
        tables.pack(sweeps, FIXTURE)
        tables.write_tables(FIXTURE)
        shutil.rmtree(FIXTURE / "seed_table" / "curves")


if __name__ == "__main__":
    rebuild_fixture()
    sys.exit(0)


def test_runs_kept_by_other_scripts_beside_the_sweeps_are_left_alone(tmp_path):
    """results/runs/ also holds the field table's and the context split's runs, packed in their own layout
    (loose eval files, no archive): the outcome tables neither rebuild nor verify them."""
    shutil.copytree(FIXTURE, tmp_path / "results")
    foreign = tmp_path / "results" / "runs" / "field" / "ac_facts"
    shutil.copytree(FIXTURE / "runs" / "softonly" / "contrastive_softonly-seed1", foreign)
    (foreign / EVAL_ARCHIVE).unlink()  # as an unpacked sweep run, it would fail verification
    tables = outcome_tables()
    assert tables.check(tmp_path / "results", log=lambda _: None) == []
    assert "field" in unpack_runs(tmp_path / "results" / "runs", tmp_path / "all")  # without `only`, every folder
    assert "field" not in unpack_runs(tmp_path / "results" / "runs", tmp_path / "some", only=tables.SWEEPS)
