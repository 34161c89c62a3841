"""Injection mode ``fused_prompt``: the target reads its own prompt, its key/value cache fused with the source's."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Text


class FusedPrompt(InjectionMode):
    """[bos][prompt] as the target reads it alone; a ``kv_fusion`` message (the ``c2c`` translator)
    changes the cache of these positions, the answer positions are never fused."""

    name = "fused_prompt"
    accepts = ("fused_prompt",)

    def segments(self, text: TargetText) -> list[Segment]:
        return [Text(text.prefix), Text(text.prompt), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(FusedPrompt)
