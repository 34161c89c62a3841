"""The systems an evaluation compares, and how the text relay hands the source's solution to the target."""

from __future__ import annotations

from typing import Literal

from latentbridge.api.task import Prompt

# every record has a field set for each, in this order; shuffled and null are the controls (eval/controls.py)
SYSTEMS = ("source", "target", "bridged", "shuffled", "null", "relay")
CONTROLS = ("shuffled", "null")
BASELINES = ("source", "target", "relay")  # do not change during training: generated once and cached
SystemName = Literal[SYSTEMS]  # type: ignore[valid-type]  (a recipe's eval.systems entries)


def relay_prompt_text(prompt: Prompt, source_output: str) -> str:
    """The text relay: the prompt, then the source's worked solution up to (not including) its
    ``####`` line; the target continues from there and gives the final answer itself."""
    reasoning = source_output.split("####")[0].strip()
    return prompt.text + prompt.separator + reasoning + ("\n" if reasoning else "")
