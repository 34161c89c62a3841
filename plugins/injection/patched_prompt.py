"""Injection mode ``patched_prompt``: the target reads its own prompt; an activation message is written
into its residual stream at the prompt's last token."""

from __future__ import annotations

from latentbridge.plugins.injection.fused_prompt import FusedPrompt

from latentbridge import hookimpl


class PatchedPrompt(FusedPrompt):
    """[bos][prompt] as the target reads it alone; an ``activation`` message (the ``ac`` translator)
    changes the state entering one layer at the prompt's last token."""

    name = "patched_prompt"
    accepts = ("patched_prompt",)


@hookimpl
def register_injection_modes(register):
    register(PatchedPrompt)
