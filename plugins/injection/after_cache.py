"""Injection mode ``after_cache``: the target reads its own prompt after the source's shared cache (KVComm)."""

from __future__ import annotations

from latentbridge.plugins.injection.fused_prompt import FusedPrompt

from latentbridge import hookimpl


class AfterCache(FusedPrompt):
    """[source's cache][bos][prompt]: a ``kv_share`` message (the ``kvcomm`` translator) is the cache the
    target's own text follows, at the layers it shares."""

    name = "after_cache"
    accepts = ("cache_before",)


@hookimpl
def register_injection_modes(register):
    register(AfterCache)
