"""Injection mode ``soft_only``: the target reads the soft tokens and the answer cue, no question text."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Soft, Text


class SoftOnly(InjectionMode):
    """[bos][soft][cue]: the question reaches the target only through the soft tokens."""

    name = "soft_only"
    accepts = ("soft_slot", "cache_prefix")
    reads_question = False

    def segments(self, text: TargetText) -> list[Segment]:
        return [Text(text.prefix), Soft(), Text(text.cue), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(SoftOnly)
