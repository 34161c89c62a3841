"""Injection mode ``soft_after_header``: the message after the few-shot header, which is read once as a cache."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Soft, Text


class SoftAfterHeader(InjectionMode):
    """[bos][header][soft][question][cue]: the message between the few-shot header and this question.

    Nothing before the message depends on it, so the target reads the special prefix and the header
    (everything before the question's own tokens) once, without gradient, and the rest of the row after
    their key/value cache: run once per batch when every row has the same header (a fixed few-shot
    header), per row otherwise. The result equals reading the whole row at once (the same ids, positions
    and attention), in training as in generation; a step then costs what a prompt without the header
    costs, plus the attention over its cache. Against ``soft_plus_text`` only the message's place
    differs: the header's states no longer see the message."""

    name = "soft_after_header"
    accepts = ("soft_slot", "cache_prefix")
    caches_lead = True

    def segments(self, text: TargetText) -> list[Segment]:
        start = text.question_span[0]
        lead = [*text.prefix, *text.prompt[:start]]
        return [Text(lead, cached=True), Soft(), Text(text.prompt[start:]), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(SoftAfterHeader)
