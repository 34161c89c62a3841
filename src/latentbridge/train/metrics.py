"""Metrics lines: one per logged window of steps, averaged."""

from __future__ import annotations

import math
from typing import Any


def average_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics line for the steps since the last one: the last step's lr and weights, the mean of
    the loss terms and grad norms over the steps (a term that was off is null)."""
    last = records[-1]
    line: dict[str, Any] = {"step": last["step"], "steps_averaged": len(records)}
    for key, value in last.items():
        if key == "step":
            continue
        if key.startswith("loss") or key == "grad_norm":
            values = [r[key] for r in records if r.get(key) is not None and math.isfinite(r[key])]
            line[key] = sum(values) / len(values) if values else None
        else:
            line[key] = value
    return line
