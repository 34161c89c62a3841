"""benchmarks/latency.py --repeats: each ratio is the median of the rounds' ratios, each time the median of
the rounds' times (a pure function; no wall clock is read here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def latency():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # latency.py imports its neighbour common.py
    try:
        spec = importlib.util.spec_from_file_location("latency_benchmark", ROOT / "benchmarks" / "latency.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_a_ratio_is_the_median_of_the_rounds_ratios(latency):
    # system a against b in three rounds: ratios 0.5, 1.0, 0.25 (median 0.5); the medians' ratio would be 3 / 10
    times = [(1.0, 2.0), (10.0, 10.0), (3.0, 12.0)]
    rounds = [{"a": {"batch 1": a, "tokens": 5.0, "parts, batch 1": {"x": a / 2}},
               "b": {"batch 1": b, "tokens": 6.0, "parts, batch 1": {"x": b}}} for a, b in times]
    rows = latency.combine(rounds, "b", ["batch 1"])
    assert rows["a"]["ratio, batch 1"] == 0.5
    assert rows["a"]["ratios, batch 1"] == [0.5, 1.0, 0.25]
    assert rows["a"]["batch 1"] == 3.0 and rows["b"]["batch 1"] == 10.0
    assert rows["b"]["ratio, batch 1"] == 1.0
    assert rows["a"]["parts, batch 1"] == {"x": 1.5}
    assert rows["a"]["tokens"] == 5.0
