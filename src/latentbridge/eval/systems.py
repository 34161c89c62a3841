"""The systems an evaluation compares (the relay's cut of the source's solution: bridge/solutions.py)."""

from __future__ import annotations

from typing import Literal

# every record has a field set for each, in this order; shuffled and null are the controls (eval/controls.py)
SYSTEMS = ("source", "target", "bridged", "shuffled", "null", "relay")
CONTROLS = ("shuffled", "null")
BASELINES = ("source", "target", "relay")  # do not change during training: generated once and cached
SystemName = Literal[SYSTEMS]  # type: ignore[valid-type]  (a recipe's eval.systems entries)
