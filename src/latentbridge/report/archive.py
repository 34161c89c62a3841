"""Published results kept with the repository: run folders without checkpoints or weights.

Layout of a results folder (``benchmarks/results/runs/``)::

    <sweep>/<run id>/recipe.yaml           as the run wrote them
                     run.json
                     summary.json
                     metrics.jsonl
                     speed.jsonl
                     eval_samples.tar.xz   every eval_samples_*.jsonl of the run (dev and test), byte for byte

``checkpoints/``, ``best/``, the translator's weights and card, logger folders and anything else
are left out. The archive is deterministic (sorted members, no times, owners or modes but 0644), so
packing the same run twice gives the same bytes. :func:`unpack_runs` rebuilds run folders that the
report reads like the originals, and :func:`verify_run` recomputes every summary in ``summary.json``
from the per-item files: a published number that the items do not give is an error.
"""

from __future__ import annotations

import io
import json
import lzma
import shutil
import tarfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.eval.summary import EVAL_FILE_RE, summarize_records
from latentbridge.report.runs import expand_run_dirs, load_run

KEPT_FILES = ("recipe.yaml", "run.json", "summary.json", "metrics.jsonl", "speed.jsonl")
EVAL_ARCHIVE = "eval_samples.tar.xz"
UNFINISHED = ("running", "preempted")


def _eval_members(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("eval_samples_*.jsonl") if p.is_file() and EVAL_FILE_RE.search(p.name))


def write_eval_archive(files: Sequence[Path], path: Path) -> None:
    """A deterministic ``.tar.xz`` of ``files`` (by name, sorted; no times or owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for file in sorted(files, key=lambda f: f.name):
            data = file.read_bytes()
            info = tarfile.TarInfo(file.name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(lzma.compress(buffer.getvalue(), preset=9))


def read_eval_archive(path: Path) -> dict[str, bytes]:
    """File name -> bytes of an evaluation archive; only plain ``eval_samples_*.jsonl`` members are allowed."""
    out: dict[str, bytes] = {}
    with tarfile.open(path, mode="r:xz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or not EVAL_FILE_RE.fullmatch(member.name):
                raise LatentBridgeError(f"{path}: unexpected member {member.name!r} (only eval_samples_*.jsonl files)")
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
    return out


def pack_run(folder: Path, dest: Path) -> Path:
    """Copy what a published table needs from the run ``folder`` into ``dest`` (replaced)."""
    run = load_run(folder)  # refuses old layouts: only dev-selected runs are published
    if run.status in UNFINISHED:
        raise LatentBridgeError(f"{folder}: the run is {run.status}; finish it (rerun the sweep) before packing it")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEPT_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dest / name)
    members = _eval_members(folder)
    if members:
        write_eval_archive(members, dest / EVAL_ARCHIVE)
    return dest


def pack_sweep(sweep: Path, dest: Path) -> list[Path]:
    """Pack every run folder of the sweep folder ``sweep`` (its ``report/`` is not a run) into
    ``dest/<run id>/``; ``dest`` is emptied first, so a run removed from the sweep goes too."""
    folders = expand_run_dirs([sweep], exclude=[sweep / "report"])
    if not folders or folders == [sweep]:
        load_run(sweep)  # a sweep folder holding no run: say why
    if dest.exists():
        strays = [p.name for p in dest.iterdir() if not (p.is_dir() and (p / "summary.json").is_file())]
        if strays:
            raise LatentBridgeError(f"{dest}: holds more than packed runs ({', '.join(sorted(strays))}); not replacing it")
        shutil.rmtree(dest)
    return [pack_run(folder, dest / folder.name) for folder in folders]


def unpack_run(packed: Path, dest: Path) -> Path:
    """Rebuild a run folder from its packed copy: the kept files and the evaluation files."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        if (packed / name).is_file():
            shutil.copyfile(packed / name, dest / name)
    if (packed / EVAL_ARCHIVE).is_file():
        for name, data in read_eval_archive(packed / EVAL_ARCHIVE).items():
            (dest / name).write_bytes(data)
    return dest


def unpack_runs(results: Path, dest: Path, only: Collection[str] | None = None) -> dict[str, list[Path]]:
    """Every packed sweep of ``results`` (``<sweep>/<run id>/``) rebuilt under ``dest``: sweep -> run folders.
    ``only``: the sweeps to rebuild (others beside them, kept in another layout, are left alone)."""
    if not results.is_dir():
        raise LatentBridgeError(f"{results}: no such folder of packed runs (pack the sweeps into it first: "
                                "`python benchmarks/outcome_tables.py pack --runs runs/sweeps`)")
    only = (only,) if isinstance(only, str) else only  # one sweep's name, not its letters
    sweeps: dict[str, list[Path]] = {}
    for sweep in sorted(p for p in results.iterdir() if p.is_dir() and (only is None or p.name in only)):
        sweeps[sweep.name] = [unpack_run(run, dest / sweep.name / run.name)
                              for run in sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())]
    return sweeps


COMPARED = ("n", "correct", "invalid", "distinct", "collapsed")


def _digest(summary: dict[str, Any] | None) -> Any:
    """What :func:`verify_run` compares: per system the counts; the paired tests' discordant counts."""
    if summary is None:
        return None
    systems = {s: None if v is None else {k: v.get(k) for k in COMPARED} for s, v in summary["systems"].items()}
    paired = {k: {c: n for c, n in (summary.get(k) or {}).items() if c == "n" or c.endswith("_only")}
              for k in ("mcnemar_bridged_vs_target", "information_flow")}
    return {"n_items": summary.get("n_items"), "systems": systems, **paired}


def verify_run(folder: Path) -> list[str]:
    """Every summary in the run's ``summary.json`` recomputed from its evaluation files: a list of
    the mismatches and missing files (empty when every number is what the items give)."""
    summary = json.loads((folder / "summary.json").read_text())
    wanted: dict[str, dict[str, Any]] = {f"eval_samples_dev_step_{e['step']}.jsonl": e for e in summary["evaluations"]}
    test = summary.get("test") or {}
    if "final" in test:
        wanted[f"eval_samples_test_step_{test['final']['step']}.jsonl"] = test["final"]
    if "best" in test and test["best"]["step"] != test.get("final", {}).get("step"):
        wanted[f"eval_samples_test_best_step_{test['best']['step']}.jsonl"] = test["best"]
    problems = []
    for name, published in wanted.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{folder.name}: {name} is missing")
            continue
        records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        recomputed = json.loads(json.dumps(summarize_records(records)))  # through JSON, as summary.json was
        if _digest(recomputed) != _digest(published):
            problems.append(f"{folder.name}: {name} does not give the figures summary.json holds for it")
    return problems
