"""Injection mode ``soft_plus_text``: soft tokens in front of the literal prompt."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Soft, Text


class SoftPlusText(InjectionMode):
    """[bos][soft][prompt]: soft tokens in front of the literal prompt (few-shot header and question)."""

    name = "soft_plus_text"
    accepts = ("soft_slot", "cache_prefix")

    def segments(self, text: TargetText) -> list[Segment]:
        return [Text(text.prefix), Soft(), Text(text.prompt), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(SoftPlusText)
