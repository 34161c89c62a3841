"""The README's library example runs as written (in a fresh folder, offline, on the built-in tiny pair)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- library-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no library example after <!-- library-example -->"
    return match.group(1)


def test_the_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(library_example(), "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert (tmp_path / "runs/demo/summary.json").is_file()
    assert (tmp_path / "runs/demo/eval_final/summary.json").is_file()
    assert (tmp_path / "runs/demo/report/report.md").is_file()
    assert namespace["summary"]["systems"]["bridged"]["n"] == 8
    assert [r["split"] for r in namespace["rows"]] == ["dev", "test"]  # the periodic (dev) and final (test) evaluations
    accuracy, best = capsys.readouterr().out.split()
    assert 0.0 <= float(accuracy) <= 1.0 and int(best) == 4
