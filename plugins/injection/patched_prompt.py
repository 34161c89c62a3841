"""Injection mode ``patched_prompt``: the target reads its own prompt; an activation message is written
into its residual stream at the prompt's last token."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Text


class PatchedPrompt(InjectionMode):
    """[bos][prompt] as the target reads it alone; an ``activation`` message (the ``ac`` translator)
    changes the state entering one layer at the prompt's last token."""

    name = "patched_prompt"
    accepts = ("activation",)

    def segments(self, text: TargetText) -> list[Segment]:
        return [Text(text.prefix), Text(text.prompt), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(PatchedPrompt)
